#!/usr/bin/env python3
"""Benchmark the embedded default run: wall time from a clean results/ and of a no-op re-run.

Usage: python workflow/bench/default_run.py [--config config.yaml] [--cores 2] [--keep DIR]

Runs Snakemake on a copy of the config in a fresh folder (so the repository's results/ is not
touched), then prints one table: wall time, jobs run, time per rule (from the rules' benchmark
files) and the no-op re-run.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(workdir: Path, cores: int, *extra: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ipcond-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.config, work / "config.yaml")

    wall, log = run(work, args.cores, "results/figures/all.pdf", "results/checks.tsv")
    n_jobs = log.count("Finished jobid")
    noop, _ = run(work, args.cores, "results/figures/all.pdf", "results/checks.tsv")

    per_rule: dict[str, list[float]] = defaultdict(list)
    for tsv in (work / "benchmarks").rglob("*.tsv"):
        rule = tsv.stem if tsv.parent.name == "base_model" or tsv.parent.parent == work / "benchmarks" else tsv.stem
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        per_rule[rule].append(float(row["s"]))

    print(f"{'measure':45s} {'value':>12s}")
    print(f"{'default run, clean results/ (s)':45s} {wall:12.1f}")
    print(f"{'jobs run':45s} {n_jobs:12d}")
    print(f"{'no-op re-run (s)':45s} {noop:12.1f}")
    for rule, secs in sorted(per_rule.items()):
        print(f"{'  ' + rule + ': jobs / total s / mean s':45s} {len(secs):4d} {sum(secs):7.1f} {sum(secs) / len(secs):6.1f}")
    print(f"\n(run folder: {work})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
