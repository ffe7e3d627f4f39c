"""Run the points of a sweep: serially, on a local process pool (default) or on a Dask cluster.

Every executor runs the same picklable task, ``execute_point``, which runs one scenario through
the normal pipeline and never raises for a point's own failure: it returns a payload with status
``failed`` and the error, so one broken point cannot stop the sweep. The parent writes each
finished point to the cache as soon as it arrives, so a sweep killed midway keeps everything that
finished. Dask is imported only when a Dask executor is asked for.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from etr_sim.errors import ConfigError, problem

if TYPE_CHECKING:  # kept out of the import, so starting workers costs nothing (see PoolExecutor)
    from etr_sim.config.load import LoadedScenario
    from etr_sim.sweep.grid import Point

Runner = Callable[["LoadedScenario"], list[dict]]


def run_scenario(loaded: LoadedScenario) -> list[dict]:
    """The default runner: the normal pipeline; returns the summary table as records (one per router)."""
    import etr_sim.preload  # noqa: F401 - the fast way to import the pipeline
    from etr_sim.pipeline import run

    summary = run(loaded).summary
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in summary.to_dict("records")]


def execute_point(point: Point, runner: Runner = run_scenario, torch_threads: int | None = None) -> dict:
    """Run one point; returns ``{index, key, status: ok|failed, rows, error, elapsed_s}``.

    torch_threads: intra-op threads for torch in this worker (None leaves torch's default); with
    several workers on one machine, cores / workers avoids oversubscribing the CPU.
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    start = time.perf_counter()
    try:
        assert point.loaded is not None, "invalid points are never executed"
        rows = runner(point.loaded)
        status, error = "ok", None
    except Exception as exc:  # noqa: BLE001 - a point's failure is data, recorded in the results
        rows, status = [], "failed"
        tail = traceback.format_exception(exc)[-3:]
        error = f"{type(exc).__name__}: {exc}\n" + "".join(tail)
    return {
        "index": point.index,
        "key": point.key,
        "status": status,
        "rows": rows,
        "error": error,
        "elapsed_s": time.perf_counter() - start,
    }


def _lost(point: Point, exc: BaseException) -> dict:
    """Payload for a point whose worker died (killed, out of memory) instead of returning."""
    return {"index": point.index, "key": point.key, "status": "failed", "rows": [],
            "error": f"worker lost: {type(exc).__name__}: {exc}", "elapsed_s": float("nan")}


class SerialExecutor:
    """Runs points one after another in this process (``--workers 1``)."""

    description = "serial (this process)"

    def __init__(self, torch_threads: int | None = None):
        self.torch_threads = torch_threads

    def run(self, points: Iterable[Point], runner: Runner) -> Iterator[dict]:
        for p in points:
            yield execute_point(p, runner, self.torch_threads)

    def close(self) -> None:
        pass


class PoolExecutor:
    """A local pool of ``workers`` processes; each gets cores // workers torch threads unless told otherwise.

    Start method: ``forkserver`` where the platform has it (Linux): one server process imports the
    simulator (torch, pandas, simpy) once and forks every worker from it, so workers start in
    milliseconds without inheriting this process's threads or state; ``spawn`` elsewhere. The server
    starts here, so it imports the simulator while this process goes on (loading the sweep): create
    the executor first.
    """

    def __init__(self, workers: int, torch_threads: int | None = None):
        self.workers = workers
        self.torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // workers)
        self.description = f"local process pool, {workers} workers"
        if "forkserver" in multiprocessing.get_all_start_methods():
            from multiprocessing import forkserver

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["etr_sim.preload"])
            forkserver.ensure_running()  # returns at once; the server preloads in the background
        else:
            ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx)

    def run(self, points: Iterable[Point], runner: Runner) -> Iterator[dict]:
        futures = {self._pool.submit(execute_point, p, runner, self.torch_threads): p for p in points}
        try:
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - a broken pool fails the points it held
                    yield _lost(futures[fut], exc)
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Points as tasks on a Dask distributed cluster: an existing scheduler (``tcp://HOST:PORT``)
    or a LocalCluster of ``local_workers`` single-threaded worker processes started here.

    The workers must be able to import this etr-sim (same version: the cache key includes it).
    """

    def __init__(self, scheduler: str | None = None, local_workers: int | None = None, torch_threads: int | None = None,
                 connect_timeout_s: float = 10.0):
        from dask.distributed import Client, LocalCluster

        self._cluster = None
        if scheduler is not None:
            try:
                self._client = Client(scheduler, timeout=connect_timeout_s)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError("--scheduler", problem("", f"cannot reach the Dask scheduler: {exc}", scheduler)) from None
            self.description = f"Dask cluster at {scheduler}"
            self.torch_threads = torch_threads
        else:
            assert local_workers is not None and local_workers >= 1
            self._cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self._client = Client(self._cluster)
            self.description = f"Dask LocalCluster, {local_workers} workers"
            self.torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // local_workers)

    def run(self, points: Iterable[Point], runner: Runner) -> Iterator[dict]:
        from dask.distributed import as_completed as dask_completed

        futures = {}
        for p in points:
            fut = self._client.submit(execute_point, p, runner, self.torch_threads, key=f"etr-point-{p.index}-{p.key[:16]}", pure=False)
            futures[fut] = p
        try:
            for fut in dask_completed(list(futures)):
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker
                    yield _lost(futures[fut], exc)
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(workers: int = 1, scheduler: str | None = None, dask_local: int | None = None,
                  torch_threads: int | None = None) -> Any:
    """Pick the executor the CLI flags ask for: a Dask scheduler, a Dask LocalCluster, a pool, or serial."""
    if scheduler is not None:
        return DaskExecutor(scheduler=scheduler, torch_threads=torch_threads)
    if dask_local is not None:
        return DaskExecutor(local_workers=dask_local, torch_threads=torch_threads)
    if workers <= 1:
        return SerialExecutor(torch_threads)
    return PoolExecutor(workers, torch_threads)
