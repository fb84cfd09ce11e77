"""A warm worker: one long-lived Python process that has imported torch, transformers, PEFT and TRL
once, and forks a child for each job that asks it to run a function.

Why: a toy-scale job (a LoRA fine-tune of a tiny model, its generations) does ~15 s of work, and a
fresh Python process spends ~9 s importing the model stack before it starts. Snakemake runs every
job in a new process, so on a laptop half of the default run would be imports. A job script calls
:func:`call` instead of the function; :func:`call` connects to the worker (starting it on first
use) and the worker forks: the child starts with every module already imported.

Snakemake stays the scheduler: each job is still one Snakemake job whose process waits for its
child and exits with the child's status. The child behaves like the job's own process:

- it writes to the job's stdout and stderr (the job passes its file descriptors over the socket),
  runs in the job's working folder and with the job's environment (secrets included: they travel
  over a socket only this user can open, and are never written anywhere);
- it runs in its own process group, which the worker kills (TERM, then KILL) as soon as the job's
  process goes away, e.g. when Snakemake is interrupted or cancels the job;
- a raised exception prints its traceback and fails the job; the exit status is the child's.

The worker is keyed by a fingerprint of the interpreter, ``sys.path`` and the ``ipcond`` sources:
after an edit or a reinstall, jobs start a fresh worker and never run stale code. It exits after
``idle_seconds`` without a job. It never runs torch code itself (a fork after OpenMP or CUDA has
started is unsafe); children start from a process that has only imported modules.

It is used only where it helps and is safe: ``execution.warm_worker`` in the config (on in the toy
default), not inside a SLURM job (the worker would live in, and die with, one job's cgroup), and
not when ``IPCOND_WARM_WORKER=0``. Wherever it cannot start, the job runs the function in its own
process, with a one-line notice: the results are the same either way (a test checks this).

Run ``python -m ipcond.worker --status`` to list running workers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PROTOCOL = 1
# What the worker imports before it accepts jobs: the model stack and the package's heavy modules.
# Attribute access (``trl:SFTTrainer``) forces the lazy submodules these libraries load on first use.
PRELOAD = ("torch", "transformers:AutoModelForCausalLM", "transformers:AutoTokenizer",
           "transformers:TrainerCallback", "transformers.models.qwen2.modeling_qwen2", "peft:LoraConfig",
           "peft:PeftModel", "trl:SFTTrainer", "trl:SFTConfig", "datasets:Dataset", "accelerate",
           "ipcond.stages.cell", "ipcond.stages.evaluate", "ipcond.training", "ipcond.generation", "ipcond.teacher_forcing", "ipcond.scoring",
           "ipcond.modeling")
DEFAULT_IDLE_SECONDS = 60.0  # IPCOND_WARM_WORKER_IDLE overrides it
START_TIMEOUT_SECONDS = 300.0  # imports on a loaded laptop core can take a minute
KILL_GRACE_SECONDS = 5.0

_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")


class WorkerUnavailable(RuntimeError):
    """The worker could not be reached or started; the caller runs the job itself."""


# ------------------------------------------------------------------------------------------
# Where a worker lives
# ------------------------------------------------------------------------------------------

def runtime_dir() -> Path:
    """A folder only this user can use, for sockets, locks and worker logs."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "ipcond-worker" if base and os.access(base, os.W_OK) else None
    if root is None or len(str(root)) > 60:  # AF_UNIX socket paths must stay under ~107 bytes
        root = Path("/tmp") / f"ipcond-worker-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise WorkerUnavailable(f"{root} is not a private folder of this user (owner uid {st.st_uid}, "
                                f"mode {oct(st.st_mode & 0o777)}); remove it or set XDG_RUNTIME_DIR")
    return root


def preload_list() -> tuple[str, ...]:
    """What a worker preloads: :data:`PRELOAD`, or ``IPCOND_WARM_WORKER_PRELOAD`` (comma-separated
    ``module`` or ``module:attribute``; the tests use a light list)."""
    custom = os.environ.get("IPCOND_WARM_WORKER_PRELOAD")
    return tuple(m.strip() for m in custom.split(",") if m.strip()) if custom is not None else PRELOAD


def code_fingerprint(preload: tuple[str, ...] | None = None) -> str:
    """Changes whenever a worker started now would differ from one started earlier: another
    interpreter or PYTHONPATH, an edited or reinstalled ``ipcond``, another preload list. (A child
    takes its job's ``sys.path``; what the worker preloaded comes from the same places.)"""
    pkg = Path(__file__).resolve().parent
    files = sorted((str(p.relative_to(pkg)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in pkg.rglob("*.py"))
    blob = repr((PROTOCOL, sys.executable, sys.version, os.environ.get("PYTHONPATH"), str(pkg), files,
                 preload if preload is not None else preload_list()))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def socket_path(fingerprint: str | None = None) -> Path:
    return runtime_dir() / f"{fingerprint or code_fingerprint()}.sock"


def enabled(config: dict | None) -> tuple[bool, str]:
    """Whether a job should use the worker, and why not when it should not."""
    if os.environ.get("IPCOND_WARM_WORKER", "").strip() == "0":
        return False, "IPCOND_WARM_WORKER=0"
    if "SLURM_JOB_ID" in os.environ:
        return False, "inside a SLURM job"
    if not (config or {}).get("execution", {}).get("warm_worker", False):
        return False, "execution.warm_worker is off"
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        return False, "this platform has no fork or Unix sockets"
    return True, ""


# ------------------------------------------------------------------------------------------
# Client: what a job script calls
# ------------------------------------------------------------------------------------------

def _resolve(target: str) -> Any:
    """``"package.module:function"`` -> the function."""
    module, _, name = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split(".") if name else ():
        obj = getattr(obj, part)
    return obj


def run_here(target: str, args: tuple, kwargs: dict) -> Any:
    return _resolve(target)(*args, **kwargs)


def call(target: str, *args: Any, worker_config: dict | None = None, **kwargs: Any) -> None:
    """Run ``target(*args, **kwargs)`` (``target`` as ``"module:function"``) in a child of the warm
    worker when :func:`enabled` says so for ``worker_config`` (the workflow's config), else in this
    process. A failed child ends this process with its exit status (its traceback is on this
    process's stderr, as a local run's would be). Arguments must pickle: pass plain strings, not
    Snakemake's file objects."""
    use, _ = enabled(worker_config)
    if not use:
        run_here(target, args, kwargs)
        return
    payload = pickle.dumps({"target": target, "args": args, "kwargs": kwargs, "cwd": os.getcwd(),
                            "env": dict(os.environ), "sys_path": list(sys.path)}, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        status = _submit(payload)
    except WorkerUnavailable as e:
        print(f"ipcond: warm worker unavailable ({e}); running the job in its own process", file=sys.stderr,
              flush=True)
        run_here(target, args, kwargs)
        return
    if status != 0:
        # A negative status is a signal (as subprocess reports it); a shell shows it as 128+N.
        raise SystemExit(status if status > 0 else 128 - status)


def _submit(payload: bytes, attempts: int = 3) -> int:
    """Send one job; return its exit status. Retries when a worker closed before taking the job
    (it was exiting after its idle time)."""
    for _ in range(attempts):
        sock = _connect_or_start()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
            sock.sendall(payload)
            started = _recv_exact(sock, 1)
            if started != b"S":
                continue  # the worker closed without taking the job: start or find another
            status = _recv_exact(sock, _STATUS.size)
            if len(status) < _STATUS.size:
                raise SystemExit("ipcond: the warm worker died while running this job; see its log in "
                                 f"{runtime_dir()} (set IPCOND_WARM_WORKER=0 to run jobs without it)")
            return _STATUS.unpack(status)[0]
        except (BrokenPipeError, ConnectionResetError):
            continue
        finally:
            sock.close()
    raise WorkerUnavailable(f"no worker took the job after {attempts} attempts")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _try_connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return s
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        return None


def _connect_or_start() -> socket.socket:
    import fcntl

    try:
        path = socket_path()
    except OSError as e:
        raise WorkerUnavailable(str(e)) from e
    sock = _try_connect(path)
    if sock is not None:
        return sock
    # One job starts the worker; the others wait on the lock, then connect to it.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _try_connect(path)
        if sock is not None:
            return sock
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a worker that died without cleaning up
        log = path.with_suffix(".log")
        idle = float(os.environ.get("IPCOND_WARM_WORKER_IDLE", DEFAULT_IDLE_SECONDS))
        with open(log, "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "ipcond.worker", "--serve", str(path), "--idle", str(idle),
                                     "--preload", ",".join(preload_list())],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd="/")
        print(f"ipcond: starting a warm worker (pid {proc.pid}, imports the model stack once; log {log})",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise WorkerUnavailable(f"it exited with status {proc.returncode}; see {log}")
            sock = _try_connect(path)
            if sock is not None:
                return sock
            time.sleep(0.05)
        proc.kill()
        raise WorkerUnavailable(f"it did not start within {START_TIMEOUT_SECONDS:.0f} s; see {log}")


# ------------------------------------------------------------------------------------------
# Worker
# ------------------------------------------------------------------------------------------

def _preload(modules: tuple[str, ...]) -> None:
    for spec in modules:
        _resolve(spec)


def _child(conn: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: become the job's process, run the function, exit with its status."""
    code = 1
    try:
        os.setpgid(0, 0)  # own process group: the worker kills it and whatever it started as one
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["sys_path"]
        conn.close()
        run_here(request["target"], request["args"], request["kwargs"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _closed(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def serve(path: Path, idle_seconds: float, preload: tuple[str, ...] = PRELOAD) -> None:
    t0 = time.time()
    _preload(preload)
    print(f"worker {os.getpid()}: imported {len(preload)} modules in {time.time() - t0:.1f} s", flush=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    listener.listen(64)
    os.replace(tmp, path)  # the socket appears only once it accepts connections
    own_inode = os.stat(path).st_ino  # to remove only our own socket file, not a successor's
    import threading

    print(f"worker {os.getpid()}: serving on {path} ({threading.active_count()} Python thread(s), "
          f"{len(os.listdir('/proc/self/task')) if os.path.isdir('/proc/self/task') else '?'} OS thread(s))",
          flush=True)
    jobs: dict[socket.socket, int] = {}   # connection -> child pid
    dying: dict[int, float] = {}          # child pid -> when it was sent TERM (its job's process is gone)
    last_active = time.monotonic()
    try:
        while True:
            timeout = 0.2 if jobs else max(0.0, idle_seconds - (time.monotonic() - last_active))
            watched = [c for c, pid in jobs.items() if pid not in dying]  # a closed one would always be ready
            ready, _, _ = select.select([listener, *watched], [], [], timeout)
            for conn, pid in list(jobs.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                    with contextlib.suppress(OSError):
                        conn.sendall(_STATUS.pack(code))
                    conn.close()
                    del jobs[conn]
                    dying.pop(pid, None)
                    last_active = time.monotonic()
                elif pid in dying:
                    if time.monotonic() - dying[pid] > KILL_GRACE_SECONDS:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGKILL)
                elif conn in ready and _closed(conn):
                    # The job's process is gone (Snakemake interrupted or cancelled it): so goes its child.
                    print(f"worker: the job of pid {pid} went away; stopping it", flush=True)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGTERM)
                    dying[pid] = time.monotonic()
            if listener in ready:
                conn, _ = listener.accept()
                try:
                    conn.settimeout(30)
                    msg, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
                    request = pickle.loads(_recv_exact(conn, _HEADER.unpack(msg)[0]))
                    conn.settimeout(None)
                except (OSError, ValueError, struct.error, pickle.UnpicklingError, EOFError) as e:
                    print(f"worker: bad request: {e!r}", flush=True)
                    conn.close()
                    continue
                conn.sendall(b"S")
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    for other in jobs:
                        other.close()
                    _child(conn, fds, request)
                with contextlib.suppress(OSError):
                    os.setpgid(pid, pid)  # also here, so that a kill right after the fork finds the group
                for fd in fds:
                    os.close(fd)
                jobs[conn] = pid
                print(f"worker: job {request['target']} in pid {pid} (cwd {request['cwd']})", flush=True)
                last_active = time.monotonic()
            if not jobs and time.monotonic() - last_active >= idle_seconds:
                break
    finally:
        # New jobs can no longer connect; any already queued get EOF before "S" and start another worker.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == own_inode:
                path.unlink()
        listener.close()
        for conn, pid in jobs.items():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        print(f"worker {os.getpid()}: exiting after {idle_seconds:.0f} s idle", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ipcond.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--serve", metavar="SOCKET", help="run a worker on this socket (jobs start it themselves)")
    ap.add_argument("--idle", type=float, default=DEFAULT_IDLE_SECONDS, help="exit after this many seconds idle")
    ap.add_argument("--preload", help="comma-separated modules to import first (default: the model stack)")
    ap.add_argument("--status", action="store_true", help="list this user's workers")
    a = ap.parse_args(argv)
    if a.serve:
        preload = tuple(m for m in a.preload.split(",") if m) if a.preload is not None else PRELOAD
        serve(Path(a.serve), a.idle, preload)
    elif a.status:
        socks = sorted(runtime_dir().glob("*.sock"))
        current = socket_path().name
        for s in socks:
            print(f"{s}{'  (current code)' if s.name == current else ''}")
        if not socks:
            print(f"no worker running ({runtime_dir()})")
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
