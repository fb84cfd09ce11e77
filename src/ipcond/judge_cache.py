"""The judges' content-addressed cache: raw judge outputs in an sqlite file, keyed by everything
that determines the answer (:func:`cache_key`), so a re-run pays for nothing already judged and an
interrupted run resumes.

Foundation layer (imports nothing of the package); used by the judging client (``ipcond.judging``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from .errors import JudgeError


def cache_key(*, model: str, template_name: str, template_text: str, inputs: Any,
              params: Mapping[str, Any]) -> str:
    """sha256 over everything that determines a judge's answer. Canonical JSON (sorted keys, no
    whitespace choices left to chance) so the same request always hashes the same."""
    blob = json.dumps({"model": model, "template_name": template_name, "template_text": template_text,
                       "inputs": inputs, "params": dict(params)},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """Judge outputs in an sqlite file, keyed by ``cache_key``.

    The cache stores the judge's *raw* output (top logprobs, text, category scores), not the
    derived score, so changing e.g. ``min_valid_mass`` or a threshold re-parses for free. WAL mode
    lets several processes (parallel workflow jobs) share one file; within a process one
    connection is shared behind a lock. Every ``put`` is committed immediately (autocommit), so a
    killed run loses at most the requests in flight.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against process crashes in WAL mode; only power loss can drop the
        # last commits, which a re-run then simply pays for again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS judgements (
                                key TEXT PRIMARY KEY, model TEXT NOT NULL, scope TEXT NOT NULL,
                                value TEXT NOT NULL, created REAL NOT NULL)""")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JudgeError(f"judge cache {self.path} is closed")
        return self._db

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        keys = list(keys)
        with self._lock:
            db = self._conn()
            for i in range(0, len(keys), 500):  # stay far below sqlite's bound-variable limit
                chunk = keys[i:i + 500]
                q = f"SELECT key, value FROM judgements WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in db.execute(q, chunk):
                    out[k] = json.loads(v)
        return out

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, value: Mapping[str, Any], *, model: str, scope: str) -> None:
        # OR IGNORE: if two processes judged the same item, the first answer stays the answer.
        with self._lock:
            self._conn().execute(
                "INSERT OR IGNORE INTO judgements (key, model, scope, value, created) VALUES (?, ?, ?, ?, ?)",
                (key, model, scope, json.dumps(value, ensure_ascii=False, sort_keys=True), time.time()))

    def __bool__(self) -> bool:
        return True  # an empty cache is still a cache (``__len__`` would make it falsy)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM judgements").fetchone()[0])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


