"""One GPU per job on a local machine: a job that may use CUDA takes cards no other job holds.

Snakemake's ``gpu`` resource only counts GPUs; it does not say *which* card a job gets, so two
local GPU jobs would both start on ``cuda:0``. Here each job takes an exclusive ``flock`` on one
lock file per card (in ``IPCOND_GPU_LOCK_DIR``, default ``/tmp/ipcond-gpu-locks``, shared by
every user of the machine) and sets ``CUDA_VISIBLE_DEVICES`` to the cards it holds, before CUDA
starts. A job waits, with a message, while all cards are held. The lock goes with the process
(a killed job frees its card).

Not used inside a SLURM job (SLURM assigns cards and sets ``CUDA_VISIBLE_DEVICES``), on a
machine without NVIDIA GPUs, or with ``execution.share_gpus: true``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator


def lock_dir() -> Path:
    return Path(os.environ.get("IPCOND_GPU_LOCK_DIR", "/tmp/ipcond-gpu-locks"))


def visible_gpus() -> list[str]:
    """The cards this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every card
    ``nvidia-smi`` lists (by UUID, so that the lock names a physical card). Never starts CUDA."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


@contextlib.contextmanager
def gpu_slot(n: int = 1, *, share: bool = False, poll_seconds: float = 2.0,
             log: Callable[[str], None] = lambda m: print(m, flush=True)) -> Iterator[list[str] | None]:
    """Hold ``n`` cards for the duration; yields their ids (None when nothing is locked)."""
    import fcntl

    if n <= 0 or share or "SLURM_JOB_ID" in os.environ:
        yield None
        return
    devices = visible_gpus()
    if not devices:
        yield None
        return
    if n > len(devices):
        raise RuntimeError(f"this job needs {n} GPUs but {len(devices)} are visible ({', '.join(devices)}); "
                           "lower the rule's gpu count in the config's resources section")
    root = lock_dir()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(root, 0o1777)  # every user's jobs take the same machine's cards
    held: list[tuple[str, int]] = []
    t0, waited = time.monotonic(), False
    while True:
        for dev in devices:
            if len(held) == n:
                break
            fd = os.open(root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', dev)}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((dev, fd))
            except BlockingIOError:
                os.close(fd)
        if len(held) == n:
            break
        for _, fd in held:  # all or nothing: two multi-GPU jobs must not each hold half
            os.close(fd)
        held = []
        if not waited:
            log(f"waiting for {n} free GPU(s) of {len(devices)} (held by other jobs; locks in {root})")
            waited = True
        time.sleep(poll_seconds)
    if waited:
        log(f"got GPU(s) after {time.monotonic() - t0:.0f} s")
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(d for d, _ in held)
    try:
        yield [d for d, _ in held]
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old
        for _, fd in held:
            os.close(fd)


def job_gpu_slot(config: dict, rule: str, setup: str | None = None) -> contextlib.AbstractContextManager:
    """The cards of a model rule's job: its configured ``gpu`` count (at least one: a model job
    on a machine with GPUs uses one), unless ``execution.share_gpus``."""
    from .config import rule_resources

    requested = int(rule_resources(config, rule, setup)["gpu"])
    if requested > 0:
        require_cuda(requested, f"resources.{rule}.gpu" + (f" (setup {setup})" if setup else ""))
    return gpu_slot(max(1, requested), share=bool(config.get("execution", {}).get("share_gpus", False)))


def require_cuda(n: int, key: str) -> None:
    """Fail fast, before loading a model, when a job configured for GPUs runs where there is none
    (a paper-scale rule started on a laptop or a CPU node)."""
    import torch

    if torch.cuda.is_available():
        return
    raise RuntimeError(f"this job is configured for {n} GPU(s) ({key} = {n}) but no CUDA GPU is available here"
                       + (" (CUDA_VISIBLE_DEVICES is empty)" if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else "")
                       + ". Run it on a GPU machine or through profiles/slurm on a GPU partition; for a CPU "
                         "run, set that key to 0")
