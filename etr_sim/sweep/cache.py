"""Result cache: one JSON file per finished point, named by the point's content hash.

A file is written to a temporary name in the same folder and renamed with ``os.replace`` (atomic on
POSIX), so a killed sweep leaves either a whole file or none. A file is trusted only if it parses,
names the key it is stored under and the running etr-sim version, and its payload matches the
sha256 written next to it; anything else (truncated, edited, from an older version) is redone.
Only finished points are cached: a failed point is retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from etr_sim import __version__

FORMAT = 1


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResultCache:
    """``<folder>/<key>.json`` per finished point. Floats round-trip exactly through JSON (repr)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored payload of ``key``, or None if absent or not trustworthy (see module doc)."""
        try:
            doc = json.loads(self.path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
            return None
        if doc.get("version") != __version__ or not isinstance(doc.get("payload"), dict):
            return None
        if doc.get("sha256") != _digest(doc["payload"]):
            return None
        return doc["payload"]

    def is_corrupt(self, key: str) -> bool:
        """A file exists for ``key`` but cannot be trusted."""
        return self.path(key).exists() and self.get(key) is None

    def put(self, key: str, payload: dict) -> None:
        doc = {"format": FORMAT, "key": key, "version": __version__, "sha256": _digest(payload), "payload": payload}
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)  # key order kept: it is the column order of the table
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
