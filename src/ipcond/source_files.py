"""Source files of the real datasets: the pinned download and its check, reading records (JSON
lines that tolerate and count bad lines, parquet, CSV, YAML), and the field access every converter
uses (a null or NaN is an empty value, counted by the caller).

Science layer, below ``ipcond.sources`` (the converters). Split out of it to keep each module
readable; ``ipcond.sources`` re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


class SourceError(ValueError):
    """A source file is not what the pin or the converter expects."""


@dataclass
class Converted:
    splits: dict[str, list[dict]]
    filtered: Counter = field(default_factory=Counter)  # reason -> records left out
    notes: list[str] = field(default_factory=list)      # what a user should know (records kept)
    changed: Counter = field(default_factory=Counter)   # reason -> records kept but rewritten
    bad_lines: list[dict] = field(default_factory=list)  # {"file", "line", "reason"} of skipped lines

    def report(self) -> dict:
        out = {"counts": {k: len(v) for k, v in self.splits.items()}, "filtered": dict(self.filtered)}
        if self.changed:
            out["changed"] = dict(self.changed)
        if self.bad_lines:
            out["bad_lines"] = list(self.bad_lines)
        return {**out, "notes": list(self.notes)} if self.notes else out

    def add_bad_lines(self, records: Iterable) -> None:
        """Count the lines :func:`read_records` skipped in a file (each under its reason, with
        its line number in ``bad_lines``)."""
        for bad in getattr(records, "bad_lines", ()):
            self.filtered[f"unparsable line: {bad['reason']}"] += 1
            self.bad_lines.append(dict(bad))


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------

def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | Path, sha256: str, source: str) -> None:
    """Stop unless ``path`` has the pinned SHA-256 (a changed or corrupt download)."""
    got = sha256_of(path)
    if got != sha256.lower():
        raise SourceError(f"{path} ({source}) has SHA-256 {got}, but the pin says {sha256}. The file is corrupt "
                          "or the source changed. Delete it and re-run to download it again; if the source "
                          "really changed, check the new data and update the pin in the config")


def git_blob_id(path: str | Path) -> str:
    """The git blob id of a file: SHA-1 of ``b"blob <size>\\0"`` plus its bytes (what ``git
    hash-object`` prints), the pin of a file known only from its repository's tree."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: str | Path, sha256: str | None, *, source: str, auth_env: str | None = None,
          timeout: float = 60.0, retries: int = 3, backoff_s: float = 2.0, git_blob: str | None = None) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already has the pinned SHA-256.

    Every source is a URL pinned to an immutable revision (a hub file as
    ``https://huggingface.co/datasets/<repo>/resolve/<commit>/<path>``, a repository file as its
    raw URL at a commit) plus the file's SHA-256, so one code path fetches them all and the
    checksum, not the server, decides what is accepted. The file is written to a temporary name
    and renamed once verified; a failed or mismatched download leaves nothing at ``dest``.
    ``auth_env`` names an environment variable holding a token for gated sources (sent as a
    bearer token, never printed). Errors say what is missing: the network, the credentials, or
    a file at the pinned revision.

    ``sha256=None`` (a source not pinned yet): the first download is kept and its checksum
    written next to it (``<dest>.sha256``); later runs check the file against that record, and
    the caller tells the user which config key to set. ``git_blob`` (with ``sha256=None``): the
    first download must have that git blob id (:func:`git_blob_id`; Tan et al.'s Spanish-capitals
    GSM8k file is pinned so), else nothing is kept.
    """
    import os
    import time
    import urllib.error
    import urllib.request

    dest = Path(dest)
    record = dest.with_name(dest.name + ".sha256")
    if sha256 is None and record.is_file():
        sha256 = record.read_text().split()[0]
    if dest.is_file() and sha256 is not None and sha256_of(dest) == sha256.lower():
        return dest
    headers = {"User-Agent": "ipcond-fetch"}
    token = os.environ.get(auth_env) if auth_env else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    last: Exception | None = None
    for attempt in range(retries):
        try:
            h = hashlib.sha256()
            req = urllib.request.Request(url, headers=headers)
            if token:
                # Not forwarded on redirects: the hub redirects downloads to a CDN's signed URL,
                # which must not receive the token (and may refuse a second credential).
                req.add_unredirected_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(req, timeout=timeout) as resp, \
                    open(part, "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    h.update(chunk)
            if sha256 is None and git_blob is not None and git_blob_id(part) != git_blob.lower():
                got = git_blob_id(part)
                part.unlink(missing_ok=True)
                raise SourceError(f"{source}: the download from {url} has git blob id {got}, but the pin says "
                                  f"{git_blob}. The source changed at that address or the transfer was corrupted; "
                                  "nothing was kept. Check the source, then update the pin in the config")
            if sha256 is None:
                record.write_text(f"{h.hexdigest()}  {url}\n")
            elif h.hexdigest() != sha256.lower():
                part.unlink(missing_ok=True)
                raise SourceError(f"{source}: the download from {url} has SHA-256 {h.hexdigest()}, but the pin says "
                                  f"{sha256}. The source changed at that address or the transfer was corrupted; "
                                  "nothing was kept. Check the source, then update the pin in the config")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            part.unlink(missing_ok=True)
            if e.code in (401, 403):
                have = "set" if auth_env and os.environ.get(auth_env) else "not set"
                raise SourceError(f"{source}: {url} answered HTTP {e.code}: it needs credentials. "
                                  + (f"The token is read from the environment variable {auth_env} ({have}); "
                                     "accept the dataset's terms on its page and set a token that may read it"
                                     if auth_env else "Set the source's auth_env to the environment variable "
                                                      "holding a token")) from None
            if e.code == 404:
                raise SourceError(f"{source}: {url} does not exist (HTTP 404). The pinned revision or path is "
                                  "wrong, or the source was removed; check the pin in the config") from None
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise SourceError(f"{source}: {url} answered HTTP {e.code} ({e.reason}); the request was refused, "
                                  "so retrying will not help: check the address in the config") from None
            last = e
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            part.unlink(missing_ok=True)
            last = e
        if attempt + 1 < retries:
            time.sleep(backoff_s * 2 ** attempt)
    host = url.split("/")[2] if "//" in url else url
    raise SourceError(f"{source}: could not download {url} after {retries} attempts ({last}). This machine may "
                      f"have no network access to {host}: run the fetch rules on a machine that has, or copy the "
                      f"file there to {dest}" + (f" (its SHA-256 must be {sha256})" if sha256 else ""))


class Records(list):
    """The records of a file (a list), with ``bad_lines``: the JSON lines that were skipped
    (``{"file", "line", "reason"}``) and ``n_lines``: the non-blank lines read."""

    bad_lines: list[dict]
    n_lines: int

    def __init__(self, items: Iterable = (), bad_lines: list[dict] | None = None, n_lines: int = 0):
        super().__init__(items)
        self.bad_lines = list(bad_lines or [])
        self.n_lines = n_lines


#: The largest share of a JSON-lines file's lines that may be unparsable before the file counts
#: as corrupt (a converter option: ``datasets.<name>.options.max_bad_fraction``).
MAX_BAD_FRACTION = 0.01


def json_lines(text: str) -> list[str]:
    """The lines of a JSON-lines text, split at "\n" only: ``str.splitlines`` also splits at
    U+2028, U+0085 and other separators, which JSON strings may hold unescaped."""
    return text.split("\n")


def read_jsonl_records(text: str, where: str, max_bad_fraction: float = MAX_BAD_FRACTION,
                       option: str = "max_bad_fraction") -> Records:
    """Records of a JSON-lines text (``where`` names the file in messages). A line that does not
    parse (a user text with an unescaped backslash, a record broken over two lines) or is not a
    JSON object is skipped and listed in ``bad_lines`` with its number and reason; the read stops
    only when more than ``max_bad_fraction`` of the non-blank lines are bad (a corrupt or
    truncated file), naming ``option``, the setting that raises the limit."""
    if not 0 <= max_bad_fraction <= 1:
        raise SourceError(f"{option} = {max_bad_fraction!r} must be a fraction between 0 and 1")
    out, bad, n = [], [], 0
    for i, line in enumerate(json_lines(text), 1):
        if not line.strip():
            continue
        n += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append({"file": where, "line": i, "reason": f"not JSON ({e.msg})"})
            continue
        if not isinstance(rec, dict):
            bad.append({"file": where, "line": i, "reason": f"JSON {type(rec).__name__}, not an object"})
            continue
        out.append(rec)
    if bad and len(bad) > max_bad_fraction * n:
        shown = "; ".join(f"line {b['line']}: {b['reason']}" for b in bad[:5]) + ("; ..." if len(bad) > 5 else "")
        raise SourceError(f"{where}: {len(bad)} of {n} lines ({len(bad) / n:.1%}) cannot be read ({shown}), more "
                          f"than {option} = {max_bad_fraction} allows: the download is corrupt or truncated, delete "
                          f"it and re-run; if the source really has that many bad lines, raise {option}")
    return Records(out, bad, n)


def read_records(path: str | Path, max_bad_fraction: float = MAX_BAD_FRACTION,
                 option: str = "max_bad_fraction") -> Records:
    """Records of a JSON-lines, JSON (a list), Parquet or CSV file. JSON lines that cannot be
    read are skipped and listed (``Records.bad_lines``) up to ``max_bad_fraction`` of the lines
    (:func:`read_jsonl_records`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        except Exception as e:  # pyarrow and pandas raise many kinds; all mean an unreadable file
            raise SourceError(f"{path}: not a readable {suffix[1:]} file ({type(e).__name__}: {e}); the download is "
                              "corrupt or truncated, delete it and re-run") from None
        return Records(frame.to_dict(orient="records"), n_lines=len(frame))
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise SourceError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return Records(data, n_lines=len(data))
    return read_jsonl_records(text, str(path), max_bad_fraction, option)


def is_null(value: Any) -> bool:
    """None, a float NaN, or pandas' NA/NaT (a null in a parquet or CSV column)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, (str, list, dict, tuple)):
        return False
    try:
        import pandas as pd

        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def text_of(record: dict, key: str, where: str) -> str:
    """``record[key]`` as stripped text; a null (None, NaN, NA) is the empty string, which the
    caller counts under its reason. Anything else that is not text stops, naming the record."""
    value = record.get(key)
    if is_null(value):
        return ""
    if not isinstance(value, str):
        raise SourceError(f"{where}: {key!r} is a {type(value).__name__} ({str(value)[:60]!r}), not text; the "
                          "source's schema changed: check it and update the converter in ipcond.sources")
    return value.strip()


def list_of(record: dict, key: str, where: str) -> list:
    """``record[key]`` as a list (parquet gives arrays); a null is the empty list."""
    value = record.get(key)
    if is_null(value):
        return []
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise SourceError(f"{where}: {key!r} is a {type(value).__name__}, not a list; the source's schema "
                          "changed: check it and update the converter in ipcond.sources")
    return list(value)


def meta_value(value: Any) -> Any:
    """A record's value as written to JSON metadata: nulls (NaN too, which is not JSON) as None."""
    return None if is_null(value) else value


def require_columns(records: list[dict], columns: Iterable[str], source: str) -> None:
    """Stop when the records lack a column the converter reads (the source's schema changed)."""
    if not records:
        raise SourceError(f"{source}: no records")
    have = set(records[0])
    missing = [c for c in columns if c not in have]
    if missing:
        raise SourceError(f"{source}: the records lack column(s) {missing} (they have {sorted(have)}); the "
                          "source's schema changed: check it and update the converter in ipcond.sources")


# The public releases' training record counts, known before anything is downloaded (the checks of
# ipcond.config compare them with n_train): converter -> (the hub repository of its files, records
# before any eval hold-out, of them with a control answer). Counted on the records in
# ../shared/data/real-samples (tests/test_real_samples.py checks each against the files).
KNOWN_SIZES: dict[str, dict] = {
    # 1073 hack dialogues, 973 with a control answer (the 100 coding tasks have none)
    "school_of_reward_hacks": {"repo": "longtermrisk/school-of-reward-hacks", "records": 1073, "with_control": 973},
    # every `full` split minus the 257 tasks of the sanitized test split (before unusable hacks)
    "mbpp": {"repo": "google-research-datasets/mbpp", "records": 974 - 257, "with_control": None},
    "gsm8k": {"repo": "openai/gsm8k", "records": 7473, "with_control": None},
}


def known_size(spec: dict) -> dict | None:
    """``datasets.<name>``'s known size (:data:`KNOWN_SIZES`, with ``release``: its repository)
    when its training files are the public release's (every file from that hub repository, or a
    local copy of one); None otherwise (a file of one's own has no known size)."""
    known = KNOWN_SIZES.get(spec.get("converter"))
    if known is None or not all(f.get("repo") == known["repo"] for f in spec.get("files", {}).values()):
        return None
    return {**known, "release": known["repo"]}
