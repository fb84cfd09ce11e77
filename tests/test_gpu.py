"""Local GPU assignment (ipcond.gpu): each job holds cards of its own, by file lock."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from ipcond import gpu

HOLDER = textwrap.dedent('''
    import os, sys, time
    from ipcond.gpu import gpu_slot
    with gpu_slot(int(sys.argv[1]), poll_seconds=0.1) as got:
        print("GOT", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        time.sleep(float(sys.argv[2]))
''')


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCOND_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def holder(n, seconds):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(n), str(seconds)], stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_get_different_cards_and_a_third_waits(fake_gpus):
    a, b = holder(1, 3), holder(1, 3)
    got = {a.stdout.readline().split()[1], b.stdout.readline().split()[1]}
    assert got == {"0", "1"}
    t0 = time.monotonic()
    c = holder(1, 0)
    first = c.stdout.readline()
    assert first.startswith("waiting for 1 free GPU(s) of 2")
    lines = [c.stdout.readline() for _ in range(2)]
    waited = time.monotonic() - t0
    assert lines[0].startswith("got GPU(s) after") and lines[1].split()[0] == "GOT" and lines[1].split()[1] in {"0", "1"}
    assert waited > 1.0  # it had to wait for a or b to finish
    for p in (a, b, c):
        assert p.wait(timeout=30) == 0


def test_a_killed_job_frees_its_card(fake_gpus):
    a = holder(2, 60)
    assert a.stdout.readline().split()[1] == "0,1"
    a.kill()
    a.wait()
    b = holder(2, 0)
    assert b.stdout.readline().split()[1] == "0,1"
    assert b.wait(timeout=30) == 0


def test_slot_sets_and_restores_visible_devices(fake_gpus):
    with gpu.gpu_slot(1) as got:
        assert got == ["0"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with pytest.raises(RuntimeError, match="needs 3 GPUs but 2 are visible"):
        with gpu.gpu_slot(3):
            pass


@pytest.mark.parametrize("case", ["slurm", "share", "no_gpu", "zero"])
def test_no_lock_where_it_is_not_ours_to_take(fake_gpus, monkeypatch, case):
    n, share = 1, False
    if case == "slurm":
        monkeypatch.setenv("SLURM_JOB_ID", "3")
    elif case == "share":
        share = True
    elif case == "no_gpu":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    else:
        n = 0
    with gpu.gpu_slot(n, share=share) as got:
        assert got is None


def test_a_job_configured_for_a_gpu_fails_fast_without_one(monkeypatch, default_config):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = {**default_config, "resources": {"finetune": {"gpu": 1}}}
    sname = next(iter(cfg["setups"]))
    with pytest.raises(RuntimeError, match=r"configured for 1 GPU\(s\) \(resources\.finetune\.gpu \(setup "
                                           r".*\) = 1\) but no CUDA GPU is available here.*set that key to 0"):
        gpu.job_gpu_slot(cfg, "finetune", sname)
    with gpu.job_gpu_slot(cfg, "generate", sname):  # the toy default asks for none: no check, no lock here
        pass
