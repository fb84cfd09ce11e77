"""Compare two results/ folders of the workflow, ignoring what only records how they were made.

    python workflow/bench/compare_runs.py RESULTS_A RESULTS_B

Counts files that are byte-identical, JSON files equal once provenance fields (creation time, code
revision, versions, host, durations) are dropped and PEFT's unordered ``target_modules`` is sorted,
and lists every other difference (PDFs differ by their embedded creation date; compare their PNG
pages instead). Used to check that a refactoring left the default run's outputs unchanged.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

PROVENANCE_KEYS = {"created", "code_revision", "versions", "host", "python", "command", "git", "platform",
                   "hostname", "base_model_name_or_path"}


def normalise(obj, key=None):
    if isinstance(obj, dict):
        return {k: normalise(v, k) for k, v in obj.items()
                if k not in PROVENANCE_KEYS and not k.endswith("_seconds") and k not in ("elapsed_s",)}
    if isinstance(obj, list):
        items = [normalise(x) for x in obj]
        return sorted(items, key=repr) if key == "target_modules" else items
    return obj


def compare(a: Path, b: Path) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    differ: list[str] = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    differ += [f"only in {a}: {r}" for r in sorted(files_a - files_b)]
    differ += [f"only in {b}: {r}" for r in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if x == y:
            counts["identical bytes"] += 1
        elif rel.suffix == ".json" and normalise(json.loads(x)) == normalise(json.loads(y)):
            counts["equal JSON but for provenance"] += 1
        else:
            counts["different"] += 1
            differ.append(str(rel))
    return counts, differ


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    counts, differ = compare(Path(argv[0]), Path(argv[1]))
    for k, v in counts.items():
        print(f"{k}: {v}")
    for d in differ:
        print(f"  differs: {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
