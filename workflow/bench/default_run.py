#!/usr/bin/env python3
"""Benchmark the embedded default run and the workflow's overheads; prints one table.

Usage: python workflow/bench/default_run.py [--config config.yaml] [--cores 2] [--keep DIR]
                                            [--skip-throughput]

Runs Snakemake on a copy of the config in a fresh folder (the repository's results/ is not
touched) and reports:
- the run from a clean results/: wall time, jobs run, and per rule the jobs' wall time (from
  Snakemake's log) against the work their scripts report ("done in X s" in each job's log); the
  difference is process start-up, imports and Snakemake's own handling: the start-up share;
- a no-op re-run; the jobs a one-condition change re-runs (dry run, per rule);
- a dry run of the paper preset (``--config preset=paper``) with its number of jobs, when
  ``presets/paper.yaml`` exists;
- training and generation throughput against their baselines (workflow/bench/throughput.py, on
  the run's own base model and data).
"""

from __future__ import annotations

import argparse
import json
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


def timeline(log_text: str) -> list[dict]:
    """Every job of a Snakemake log: rule, start and end (1 s resolution) and its log files."""
    import datetime as dt
    import re

    ts, rule, logs, jobs, by_id = None, None, [], [], {}
    for line in log_text.splitlines():
        m = re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line)
        if m:
            ts = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"(?:local)?rule (\w+):", line)
        if m:
            rule, logs = m.group(1), []
            continue
        m = re.match(r"\s+log: (.*?)(?: \(check log file\(s\) for error details\))?$", line)
        if m and rule:  # a job's block lists its logs before its jobid
            logs = [x.strip() for x in m.group(1).split(",")]
            continue
        m = re.match(r"\s+jobid: (\d+)", line)
        if m and rule:
            job = {"rule": rule, "start": ts, "end": None, "logs": logs}
            by_id[m.group(1)] = job
            jobs.append(job)
            rule, logs = None, []
            continue
        m = re.match(r"Finished jobid: (\d+)", line)
        if m and m.group(1) in by_id:
            by_id[m.group(1)]["end"] = ts
    return [j for j in jobs if j["end"] is not None]


def work_seconds(workdir: Path, logs: list[str]) -> float:
    """Seconds of work a job's scripts report: the sum of their logs' "done in X s" lines."""
    import re

    total = 0.0
    for log in logs:
        path = workdir / log
        if path.is_file():
            total += sum(float(x) for x in re.findall(r"^done in ([\d.]+) s$", path.read_text(errors="replace"), re.M))
    return total


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule from a dry run's "Job stats" table."""
    import re

    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("Job stats:"):
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip() == "" and counts:
                break
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--skip-throughput", action="store_true", help="leave out workflow/bench/throughput.py")
    args = ap.parse_args()
    import yaml

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ipcond-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.config, work / "config.yaml")
    rows: list[tuple[str, str]] = []

    def row(name: str, value: object) -> None:
        rows.append((name, f"{value:.2f}" if isinstance(value, float) else str(value)))
        print(f"  {name}: {rows[-1][1]}", file=sys.stderr, flush=True)  # as it comes: a later failure keeps it

    wall, log = run(work, args.cores, "results/figures/all.pdf", "results/checks.tsv")
    n_jobs = log.count("Finished jobid")
    row("default run, clean results/ (s)", wall)
    row("jobs run", n_jobs)
    jobs = timeline(log)
    per_rule: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for j in jobs:
        per_rule[j["rule"]].append(((j["end"] - j["start"]).total_seconds(), work_seconds(work, j["logs"])))
    total_wall = sum(w for v in per_rule.values() for w, _ in v)
    total_work = sum(min(k, w) for v in per_rule.values() for w, k in v)
    row("job time, all jobs (s, summed over jobs)", total_wall)
    row("start-up share (1 - reported work / job time)", f"{1 - total_work / max(total_wall, 1e-9):.0%}")
    for rule, v in sorted(per_rule.items(), key=lambda kv: -sum(w for w, _ in kv[1])):
        w = sum(x for x, _ in v)
        k = sum(min(y, x) for x, y in v)
        row(f"  {rule}: jobs / job s / work s", f"{len(v):4d} {w:8.0f} {k:8.0f}")

    noop, _ = run(work, args.cores, "results/figures/all.pdf", "results/checks.tsv")
    row("no-op re-run (s)", noop)

    cfg = yaml.safe_load((work / "config.yaml").read_text())
    sname, setup = next(iter(cfg["setups"].items()))
    cname = next((c for c, v in setup["conditions"].items() if "prompt" in v), None)
    if cname:
        changed = {"setups": {sname: {"conditions": {cname: {**setup["conditions"][cname],
                                                              "prompt": setup["conditions"][cname]["prompt"] + " ."}}}}}
        (work / "config_changed.yaml").write_text(yaml.safe_dump(changed))
        # targets first: --configfile takes every word after it as another config file
        _, dry = run(work, args.cores, "-n", "results/figures/all.pdf", "results/checks.tsv", "--configfile",
                     str(work / "config_changed.yaml"))
        counts = job_counts(dry)
        row(f"one-condition change ({sname}/{cname} prompt): jobs", sum(counts.values()))
        row("  by rule", ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))

    paper = REPO / "presets" / "paper.yaml"
    if paper.exists():
        tmp = Path(tempfile.mkdtemp(prefix="ipcond-paper-dry-"))
        shutil.copy(args.config, tmp / "config.yaml")
        t, dry = run(tmp, args.cores, "-n", "results/figures/all.pdf", "--config", "preset=paper")
        row("dry run of the paper preset (s)", t)
        counts = job_counts(dry)
        row("  jobs", sum(counts.values()))
        row("  by rule", ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        row("dry run of the paper preset", "n/a: no presets/paper.yaml yet")

    base = work / "results/base_model/model"
    cell_train = next(iter(sorted(work.glob("results/spanish_caps/Baseline/seed*/train.jsonl"))), None)
    if not args.skip_throughput and base.is_dir() and cell_train is not None:
        out = work / "throughput.json"
        proc = subprocess.run([sys.executable, str(REPO / "workflow/bench/throughput.py"), "--base", str(base),
                               "--train", str(cell_train), "--eval", str(work / "results/spanish_caps/data/eval.jsonl"),
                               "--config", str(work / "config.yaml"), "--json", str(out)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            for k, v in json.loads(out.read_text()).items():
                row(k, v)
        else:
            row("throughput", f"failed: {proc.stderr[-300:]}")

    width = max(len(n) for n, _ in rows) + 2
    print(f"{'measure':{width}s} value")
    for name, value in rows:
        print(f"{name:{width}s} {value}")
    print(f"\n(run folder: {work})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
