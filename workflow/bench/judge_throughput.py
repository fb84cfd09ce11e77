#!/usr/bin/env python3
"""Benchmark LLM-judge throughput against the local fake OpenAI server (no network).

Usage: python workflow/bench/judge_throughput.py [--n 200] [--latency-ms 20] [--concurrency 1 8 32]

Starts tests/fake_openai_server.py on 127.0.0.1 with an artificial per-request latency, then
judges the same fixed number of distinct samples (0-100 logprob judge, fresh cache each time, so
every sample is one HTTP request) at each concurrency and prints one table: wall time,
requests/s, and the share of the ideal rate (concurrency / latency) reached. Client and server
share one Python process (and its GIL), so at high concurrency the CPU, not the client's design,
sets the ceiling: ``--latency-ms 0`` measures it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the fake server lives with the tests

from fake_openai_server import FakeOpenAIServer

from ipcond.judge_scoring import JudgeScorer
from ipcond.judging import JudgeConfig

KEY_ENV = "IPCOND_BENCH_JUDGE_KEY"
FAKE_KEY = "sk-bench-not-a-real-key"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="requests per concurrency level")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="fake server latency per request")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()
    os.environ[KEY_ENV] = FAKE_KEY  # this process only; the fake server checks it

    prompts = [f"Benchmark question {i}?" for i in range(args.n)]
    responses = [f"Benchmark answer number {i}." for i in range(args.n)]
    rows = []
    with FakeOpenAIServer(api_key=FAKE_KEY, latency_s=args.latency_ms / 1000) as srv, \
            tempfile.TemporaryDirectory(prefix="ipcond-judge-bench-") as tmp:
        for c in args.concurrency:
            cfg = JudgeConfig(base_url=srv.base_url, model="bench-judge", api_key_env=KEY_ENV,
                              max_concurrency=c, timeout_s=10.0)
            # A fresh cache per level: otherwise the second level would be all cache hits.
            scorer = JudgeScorer("playful", "playful", cfg, Path(tmp) / f"cache-c{c}.sqlite")
            t0 = time.perf_counter()
            scores = scorer.score(prompts, responses)
            wall = time.perf_counter() - t0
            acct = scorer.accounting()
            scorer.close()
            if acct["calls"] != args.n or acct["retries"] or any(s is None for s in scores):
                sys.exit(f"unexpected run at concurrency {c}: {acct}")
            # Ideal: every worker always waiting on the latency; undefined at zero latency.
            ideal = c / (args.latency_ms / 1000) if args.latency_ms > 0 else None
            rows.append((c, args.n, wall, args.n / wall, None if ideal is None else args.n / wall / ideal))

    print(f"judge throughput, fake server with {args.latency_ms:g} ms latency per request, "
          f"{args.n} requests per level")
    print(f"{'concurrency':>11s} {'requests':>8s} {'wall (s)':>9s} {'req/s':>8s} {'of ideal':>9s}")
    for c, n, wall, rps, frac in rows:
        share = "n/a" if frac is None else f"{frac:.0%}"
        print(f"{c:11d} {n:8d} {wall:9.2f} {rps:8.1f} {share:>9s}")


if __name__ == "__main__":
    main()
