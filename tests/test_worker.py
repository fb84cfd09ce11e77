"""The warm worker (ipcond.worker): jobs run in forked children that behave like the job's own
process, and die with it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ipcond import worker

JOB_MODULE = textwrap.dedent('''
    import os, sys, time

    def report(out_path, message):
        print("to stdout:", message, flush=True)
        print("to stderr:", message, file=sys.stderr, flush=True)
        with open(out_path, "w") as f:
            f.write(repr({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
                          "secret": os.environ.get("IPCOND_TEST_VAR"), "message": message}))

    def fail(kind):
        if kind == "raise":
            raise ValueError("bad input in line 7")
        sys.exit(3)

    def sleep_forever(pid_path):
        with open(pid_path, "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(0.1)
''')

CLIENT = textwrap.dedent('''
    import sys
    sys.path.insert(0, {jobs_dir!r})
    from ipcond.worker import call
    call({target!r}, *{args!r}, worker_config={{"execution": {{"warm_worker": {warm!r}}}}})
''')


@pytest.fixture
def tmp_path():
    """A short folder: the worker's socket lives under it, and socket paths are limited to ~107 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ipw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private runtime folder, a light preload list (no torch) and a short idle time."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "worker_test_jobs.py").write_text(JOB_MODULE)
    e = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"), "IPCOND_WARM_WORKER_PRELOAD": "json",
         "IPCOND_WARM_WORKER_IDLE": "3", "IPCOND_TEST_VAR": "only-in-the-job"}
    e.pop("SLURM_JOB_ID", None)
    e.pop("IPCOND_WARM_WORKER", None)
    (tmp_path / "run").mkdir(mode=0o700)
    (tmp_path / "cwd").mkdir()
    for k, v in e.items():
        monkeypatch.setenv(k, v)
    return e


def client(tmp_path, env, target, *args, warm=True, **popen):
    code = CLIENT.format(jobs_dir=str(tmp_path / "jobs"), target=target, args=args, warm=warm)
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path / "cwd", env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def read_report(path):
    import ast

    return ast.literal_eval(Path(path).read_text())


def worker_pids(run_dir):
    """Pids of the workers started under this test's runtime folder (from their logs)."""
    import re

    pids = set()
    for log in Path(run_dir).rglob("*.log"):
        pids |= {int(p) for p in re.findall(r"^worker (\d+): serving", log.read_text(), re.M)}
    return pids


def test_job_runs_in_a_forked_child_with_the_jobs_streams_cwd_and_environment(tmp_path, env):
    out = tmp_path / "report.txt"
    proc = client(tmp_path, env, "worker_test_jobs:report", str(out), "hello")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    rep = read_report(out)
    assert rep["message"] == "hello" and rep["cwd"] == str(tmp_path / "cwd")
    assert rep["secret"] == "only-in-the-job"
    assert rep["pid"] != proc.pid and rep["ppid"] != proc.pid  # run by the worker, not the job's process
    assert rep["ppid"] in worker_pids(tmp_path / "run")
    assert "to stdout: hello" in stdout and "to stderr: hello" in stderr
    assert "starting a warm worker" in stderr
    # the worker's log names the job but holds nothing of its environment
    logs = "".join(p.read_text() for p in (tmp_path / "run").rglob("*.log"))
    assert "worker_test_jobs:report" in logs and "only-in-the-job" not in logs


def test_second_and_concurrent_jobs_reuse_one_worker(tmp_path, env):
    first = client(tmp_path, env, "worker_test_jobs:report", str(tmp_path / "r0.txt"), "first")
    assert first.wait(timeout=60) == 0
    procs = [client(tmp_path, env, "worker_test_jobs:report", str(tmp_path / f"r{i}.txt"), str(i)) for i in (1, 2, 3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "starting a warm worker" not in err
    parents = {read_report(tmp_path / f"r{i}.txt")["ppid"] for i in range(4)}
    assert len(parents) == 1 and parents == worker_pids(tmp_path / "run")


def test_a_failing_job_fails_with_its_traceback_and_status(tmp_path, env):
    proc = client(tmp_path, env, "worker_test_jobs:fail", "raise")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "ValueError: bad input in line 7" in stderr and "Traceback" in stderr
    proc = client(tmp_path, env, "worker_test_jobs:fail", "exit")
    proc.communicate(timeout=60)
    assert proc.returncode == 3


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_killing_the_jobs_process_kills_its_child(tmp_path, env):
    pid_file = tmp_path / "child.pid"
    proc = client(tmp_path, env, "worker_test_jobs:sleep_forever", str(pid_file))
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGKILL)  # what a cancelled job gets at worst: no chance to clean up
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_worker_exits_when_idle_and_the_next_job_starts_another(tmp_path, env):
    proc = client(tmp_path, env, "worker_test_jobs:report", str(tmp_path / "a.txt"), "a")
    assert proc.wait(timeout=60) == 0
    first = read_report(tmp_path / "a.txt")["ppid"]
    deadline = time.time() + 20  # idle time is 3 s
    while _alive(first) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(first)
    assert not list((tmp_path / "run").rglob("*.sock"))
    proc = client(tmp_path, env, "worker_test_jobs:report", str(tmp_path / "b.txt"), "b")
    assert proc.wait(timeout=60) == 0
    assert read_report(tmp_path / "b.txt")["ppid"] != first


@pytest.mark.parametrize("how", ["config", "env", "slurm"])
def test_without_the_worker_the_job_runs_in_its_own_process(tmp_path, env, how):
    warm = how != "config"
    if how == "env":
        env = {**env, "IPCOND_WARM_WORKER": "0"}
    if how == "slurm":
        env = {**env, "SLURM_JOB_ID": "12345"}
    proc = client(tmp_path, env, "worker_test_jobs:report", str(tmp_path / "r.txt"), "x", warm=warm)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert read_report(tmp_path / "r.txt")["pid"] == proc.pid
    assert not worker_pids(tmp_path / "run")


def test_a_worker_that_cannot_start_leaves_the_job_to_its_own_process(tmp_path, env):
    env = {**env, "IPCOND_WARM_WORKER_PRELOAD": "json,no_such_module_xyz"}
    proc = client(tmp_path, env, "worker_test_jobs:report", str(tmp_path / "r.txt"), "x")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "warm worker unavailable" in stderr and "running the job in its own process" in stderr
    assert read_report(tmp_path / "r.txt")["pid"] == proc.pid


def test_fingerprint_follows_the_preload_list_and_pythonpath(env, monkeypatch):
    a = worker.code_fingerprint()
    assert worker.code_fingerprint() == a
    assert worker.code_fingerprint(("json", "csv")) != a
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    assert worker.code_fingerprint() != a


def test_enabled_says_why_not(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("IPCOND_WARM_WORKER", raising=False)
    assert worker.enabled({"execution": {"warm_worker": True}}) == (True, "")
    assert worker.enabled({"execution": {}})[1] == "execution.warm_worker is off"
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert worker.enabled({"execution": {"warm_worker": True}}) == (False, "inside a SLURM job")
