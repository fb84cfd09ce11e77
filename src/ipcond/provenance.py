"""Atomic writes and provenance records (config, package versions, code revision).

Every output is written to a temporary name in its own folder and renamed into place, so a crash
never leaves a half-written file that Snakemake would take as complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

TRACKED_PACKAGES = ("ipcond", "torch", "transformers", "tokenizers", "peft", "trl", "datasets",
                    "pandas", "numpy", "plotnine", "snakemake", "vllm")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it, briefly
    to 0, which another thread's file could catch)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` on success.

    ``suffix`` matters to writers that pick the format from the file name (plotting libraries).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); outputs get the mode a plain open() would give,
        # so that collaborators on a shared cluster can read them.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; swap it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private (0700), like mkstemp's files
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike, *, with_line_numbers: bool = False) -> list:
    """Read JSON lines, one JSON object per line (blank lines are skipped).

    Every problem raises an error that names the file, the line and the fix: a missing file
    (``FileNotFoundError``); bytes that are not UTF-8 (with the byte offset, line and column, and an
    ``iconv`` command to re-encode); a last line cut mid-record ("line N is not complete JSON; the
    file looks truncated"); a line that is not JSON; a line that is JSON but not an object (all
    ``ValueError``). An empty file gives ``[]``: callers that need records say so
    (``ipcond.data.load_chat_jsonl``). A UTF-8 byte-order mark at the start is accepted.

    With ``with_line_numbers=True`` the result is a list of ``(line_number, record)`` pairs.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found; check the path (relative paths are read from "
                                f"{Path.cwd()}) or run the step that writes it") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a JSON lines file; point at the .jsonl file") from None
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    if b"\x00" in raw:
        off = raw.index(b"\x00")
        line = raw.count(b"\n", 0, off) + 1
        raise ValueError(
            f"{path}:{line}: has a NUL byte at byte offset {off}: it is not UTF-8 text "
            f"(UTF-16, or a binary file?). Re-encode it to UTF-8, e.g. `iconv -f utf-16 -t utf-8 {path} > "
            f"{p.stem}.utf8{p.suffix}`, or point at the right file")
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        off = e.start + bom
        line = raw.count(b"\n", 0, off) + 1
        col = off - (raw.rfind(b"\n", 0, off) + 1) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8: byte 0x{raw[off]:02x} at byte offset {off} (line {line}, "
            f"column {col}) is not valid UTF-8; the file must be UTF-8. Re-encode it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > {p.stem}.utf8{p.suffix}` (with the file's real encoding "
            "in place of latin1)") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out: list = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        lineno = i + 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            # A record cut short fails at the end of its line, or inside a string never closed.
            incomplete = e.pos >= len(line.rstrip()) or e.msg.startswith("Unterminated string")
            if incomplete and i == last:
                raise ValueError(
                    f"{path}:{lineno}: line {lineno} is not complete JSON; the file looks truncated "
                    f"(it ends mid-record: {e.msg}, column {e.colno}). Regenerate or re-copy the file; "
                    f"or, to keep the {len(out)} complete record{'' if len(out) == 1 else 's'} before it, "
                    f"delete line {lineno}") from None
            if incomplete:
                raise ValueError(
                    f"{path}:{lineno}: line {lineno} is not complete JSON: the record ends mid-way ({e.msg}, "
                    f"column {e.colno}) and more lines follow (an interrupted write, then appends?); "
                    "regenerate the file, or fix or delete that line") from None
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}, column {e.colno}); "
                             "each line must be one JSON object: regenerate the file or fix that line") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: is JSON but a {type(rec).__name__}, not an object; each line "
                             'must be one JSON object ({"messages": [...]}): fix or remove that line')
        out.append((lineno, rec) if with_line_numbers else rec)
    return out


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def code_revision(repo: str | os.PathLike | None = None) -> str:
    """The git commit of the workflow (with '+dirty' if the tree has changes), or 'unknown'."""
    repo = Path(repo or Path(__file__).resolve().parents[2])
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(config: dict | None = None, **extra: Any) -> dict:
    """What made an output: config, package versions, code revision, time."""
    rec = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_revision": code_revision(),
        "versions": package_versions(),
    }
    if config is not None:
        rec["config"] = config
    rec.update(extra)
    return rec
