"""User-facing errors. Every error a user can cause names the file, the YAML path and the value."""

from __future__ import annotations

from dataclasses import dataclass


class EtrSimError(Exception):
    """Base of every error etr-sim raises on purpose. The CLI turns these into exit code 2."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file.

    path: dotted YAML path (``routers[1].capacity_factor``); empty for the whole file.
    """

    path: str
    message: str
    value: object = None
    has_value: bool = False

    def render(self) -> str:
        where = self.path or "<top level>"
        if self.has_value:
            return f"{where}: {self.message} (got {self.value!r})"
        return f"{where}: {self.message}"


def problem(path: str, message: str, *value: object) -> Problem:
    """Build a Problem; pass the bad value as a third argument when there is one."""
    if value:
        return Problem(path, message, value[0], True)
    return Problem(path, message)


class ConfigError(EtrSimError):
    """A scenario, topology or sweep file is wrong. Carries every problem found, not only the first."""

    def __init__(self, file: str, problems: list[Problem] | Problem):
        self.file = str(file)
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        lines = [f"{self.file}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p.render()}" for p in self.problems]
        super().__init__("\n".join(lines))


class TopologyError(ConfigError):
    """A topology cannot be built (disconnected, impossible link values, unknown template)."""


class InternalError(EtrSimError):
    """An invariant of the simulation broke: a bug in etr-sim, never the user's fault."""
