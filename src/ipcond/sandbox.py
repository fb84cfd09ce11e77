"""Run untrusted (model-generated) Python code in a contained child process.

Linux only, standard library only. Layers, from the outside in:

* **launcher** -- this file, run as a script by the host interpreter (``python -I -S sandbox.py``)
  in a new session, with an empty environment. Everything that needs privileges happens in this
  trusted, freshly exec'd, single-threaded process; the caller never uses ``preexec_fn``, so
  :func:`run_python` is safe to call from several threads at once.
* **namespaces** -- the launcher unshares a new network namespace (only a loopback interface,
  which is down: no traffic leaves, not even to the host's loopback), a mount namespace, a PID
  namespace, and IPC/UTS namespaces. As root it does this directly; as an ordinary user it tries an
  unprivileged user namespace. Without a network namespace the sandbox refuses to run unless the
  caller passes ``network_isolation="best_effort"``.
* **file system** (mount namespace) -- every mount is made read-only and nosuid, a fresh size-capped
  tmpfs replaces ``/tmp`` and holds the working folder ``/tmp/work`` (cwd, HOME, TMPDIR) -- the only
  writable place, gone when the run ends -- and a fresh ``/proc`` shows only the sandbox's
  processes.
* **PID namespace** -- the first process in it (a tiny root-owned reaper) starts the user code and,
  when that exits or the caller kills it, the kernel kills every process left in the namespace, so
  nothing (fork bombs, ``setsid`` daemons) outlives a call.
* **unprivileged uid** -- as root, the code runs under a uid of its own (a pool starting at
  :data:`UID_BASE`, one uid per concurrent run: ``RLIMIT_NPROC`` counts processes per uid, and
  processes of concurrent runs cannot signal or read one another). Supplementary groups are
  cleared and ``no_new_privs`` is set. Files of the host stay as readable as for any stranger
  (mode ``o+r``), no more.
* **resource limits** -- address space, CPU seconds, processes, file size, open files, no cores.
* **wall clock** -- the caller kills the whole process group (and with it the PID namespace) at
  ``wall_s``, then sweeps any process still running as the sandbox uid.

The child runs the *base* interpreter of ``sys.executable`` with ``-I -B`` (isolated mode: no
``PYTHON*`` variables, no user site, no ``.pyc`` files), so only the standard library (plus the
base interpreter's own site-packages) is importable, not the project's virtual environment. Where
that interpreter lives under a folder strangers cannot enter (pyenv under ``/root``), it is
bind-mounted read-only at ``/tmp/.python`` inside the sandbox.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

__all__ = [
    "SandboxLimits", "SandboxResult", "SandboxError", "SandboxUnavailable",
    "run_python", "probe_isolation", "processes_of_uid", "UID_BASE",
]

#: First uid of the pool the sandbox runs code under (when the caller is root). Far above the
#: ranges of ordinary users, system users, systemd's dynamic users and the usual subuid ranges.
UID_BASE = 2_000_000_000
UID_POOL_SIZE = 256

SANDBOX_WORKDIR = "/tmp/work"
SANDBOX_PYTHON = "/tmp/.python"
_SETUP_FAILED = 125  # exit code of the launcher when it could not set the sandbox up


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the code in it)."""


class SandboxUnavailable(SandboxError):
    """A required protection could not be put in place, so nothing was run."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 5.0            # wall clock for the whole run, launcher included
    cpu_s: int = 5                 # RLIMIT_CPU (SIGXCPU at cpu_s, SIGKILL a second later)
    memory_mb: int = 512           # RLIMIT_AS (address space) per process
    max_processes: int = 32        # RLIMIT_NPROC for the sandbox uid (threads count too)
    max_output_bytes: int = 1_000_000  # kept per stream (stdout, stderr); the rest is dropped
    max_file_mb: int = 16          # RLIMIT_FSIZE
    tmpfs_mb: int = 64             # size of the private /tmp holding the working folder
    max_open_files: int = 256      # RLIMIT_NOFILE


@dataclass
class SandboxResult:
    returncode: int | None         # exit status of the code; -N when killed by signal N
    stdout: str
    stderr: str
    timed_out: bool
    killed_by_signal: int | None   # signal that ended the code (SIGKILL after a timeout)
    memory_exceeded: bool          # best effort: MemoryError / allocation failure in stderr
    cpu_exceeded: bool             # ended by SIGXCPU / SIGKILL at the RLIMIT_CPU hard limit
    output_truncated: bool
    wall_s: float
    isolation: dict = field(default_factory=dict)
    stdout_bytes: int = 0          # sizes before truncation
    stderr_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Linux constants and raw calls (used by the launcher)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
SYS_MOUNT_SETATTR = 442  # same number on all architectures but alpha (Linux >= 5.12)

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38


def _libc():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, src, target, fstype, flags, data=None) -> None:
    import ctypes
    enc = (lambda s: None if s is None else s.encode())
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]
    _check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)),
           f"mount {src} on {target}")


def _mount_setattr(libc, path: str, recursive: bool, attr_set: int = 0, attr_clr: int = 0) -> None:
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(attr_set, attr_clr, 0, 0)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD),
                       ctypes.c_char_p(path.encode()),
                       ctypes.c_uint(AT_RECURSIVE if recursive else 0),
                       ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(0 if ret == 0 else -1, f"mount_setattr {path}")


def _prctl(libc, option: int, arg: int) -> None:
    import ctypes
    _check(libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)), f"prctl {option}")


# ----------------------------------------------------------------------------------------------
# Launcher: runs as `python -I -S sandbox.py --launch CONFIG` (trusted code only)

def _launcher_main(cfg_path: str) -> None:
    with open(cfg_path) as f:
        cfg = json.load(f)
    status_fd = os.open(cfg["status_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                        0o600)

    def report(**kw) -> None:
        os.write(status_fd, (json.dumps(kw) + "\n").encode())

    def fail(msg: str) -> None:
        report(stage="error", error=msg)
        os._exit(_SETUP_FAILED)

    try:
        libc = _libc()
        # Die with the caller: a dead caller must not leave a sandbox running.
        _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != cfg["parent_pid"]:
            os._exit(_SETUP_FAILED)
        with open(cfg["code_path"], "rb") as f:
            code = f.read()
        uid, gid, mode = cfg["uid"], cfg["gid"], cfg["mode"]
        iso: dict = {"mode": mode}

        # --- namespaces
        full = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        extra = CLONE_NEWUSER if mode == "userns" else 0
        got = 0
        errors = []
        attempts = (full, CLONE_NEWNS | CLONE_NEWNET, CLONE_NEWNET) if cfg["namespaces"] else ()
        if not attempts:
            errors.append("namespaces disabled by the caller")
        for flags in attempts:
            if libc.unshare(flags | extra) == 0:
                got = flags
                break
            import ctypes
            errors.append(f"unshare({flags | extra:#x}): {os.strerror(ctypes.get_errno())}")
        inner_uid, inner_gid = uid, gid
        if got and mode == "userns":
            # Map one uid/gid. As root (tests) map a non-zero inner id so exec drops capabilities.
            inner_uid = uid if uid != 0 else 1000
            inner_gid = gid if gid != 0 else 1000
            try:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"{inner_uid} {uid} 1\n")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"{inner_gid} {gid} 1\n")
                os.setresgid(inner_gid, inner_gid, inner_gid)
                os.setresuid(inner_uid, inner_uid, inner_uid)
            except OSError as e:
                fail(f"user namespace id mapping failed: {e}")
        iso["network"] = "netns" if got & CLONE_NEWNET else "none"
        iso["pid_namespace"] = bool(got & CLONE_NEWPID)
        iso["mount_namespace"] = bool(got & CLONE_NEWNS)
        iso["ipc_uts_namespaces"] = bool(got & CLONE_NEWIPC)
        if errors:
            iso["namespace_errors"] = errors
        if not got & CLONE_NEWNET and cfg["network_isolation"] != "best_effort":
            fail("no network namespace could be created (" + "; ".join(errors) + "); pass "
                 "network_isolation='best_effort' to run without network isolation")
        if not got & CLONE_NEWNS and cfg["python_needs_bind"]:
            fail(f"{cfg['python_exe']} is not readable by the sandbox uid and no mount namespace "
                 "is available to expose it")

        # --- reaper (pid 1 of the new PID namespace when there is one)
        reaper = os.fork()
        if reaper:
            while True:
                try:
                    _, st = os.waitpid(reaper, 0)
                    break
                except InterruptedError:
                    continue
            os._exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else _SETUP_FAILED)

        _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
        if got & CLONE_NEWNS:
            workdir, exe, env = _setup_filesystem(libc, cfg, code, iso, inner_uid, inner_gid,
                                                   bool(got & CLONE_NEWPID))
        else:
            workdir, exe, env = cfg["fallback_workdir"], cfg["python_exe"], dict(cfg["env"])
            env["HOME"] = env["TMPDIR"] = workdir
            path = os.path.join(workdir, "main.py")
            with open(path, "wb") as f:
                f.write(code)
            iso.update(readonly_root=False, private_tmp=False, private_proc=False, python=exe)
        report(stage="isolation", isolation=iso)

        worker = os.fork()
        if worker == 0:
            try:
                _exec_worker(libc, cfg, mode, inner_uid, inner_gid, workdir, exe, env)
            except BaseException as e:  # noqa: BLE001 - report anything, never run the code
                report(stage="error", error=f"worker setup failed: {e!r}")
            os._exit(_SETUP_FAILED)
        # Reap everything; stop when the worker is done (the kernel then kills the namespace).
        while True:
            try:
                pid, st = os.waitpid(-1, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                fail("worker vanished")
            if pid == worker:
                report(stage="exit", status=os.waitstatus_to_exitcode(st))
                os._exit(0)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        fail(f"launcher failed: {e!r}")


def _setup_filesystem(libc, cfg, code: bytes, iso: dict, uid: int, gid: int, new_pid_ns: bool):
    """Inside the new mount namespace: private /tmp with the working folder, read-only rest."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    tmp_opts = f"size={cfg['tmpfs_mb']}m,nr_inodes=8192,mode=755,uid=0,gid=0"
    if cfg["mode"] == "userns":
        tmp_opts = f"size={cfg['tmpfs_mb']}m,nr_inodes=8192,mode=755"
    _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts)
    os.mkdir(SANDBOX_WORKDIR, 0o700)
    if cfg["mode"] == "root":
        os.chown(SANDBOX_WORKDIR, uid, gid)
    main = os.path.join(SANDBOX_WORKDIR, "main.py")
    with open(main, "wb") as f:
        f.write(code)
    os.chmod(main, 0o644)
    if cfg["mode"] == "root":
        os.chown(main, uid, gid)
    iso["private_tmp"] = True

    exe, env = cfg["python_exe"], dict(cfg["env"])
    if cfg["python_needs_bind"]:
        os.mkdir(SANDBOX_PYTHON, 0o755)
        _mount(libc, cfg["python_prefix"], SANDBOX_PYTHON, None, MS_BIND | MS_REC)
        exe = os.path.join(SANDBOX_PYTHON, cfg["python_exe_rel"])
        if os.path.isdir(os.path.join(SANDBOX_PYTHON, "lib")):  # libpython with absolute RUNPATH
            env["LD_LIBRARY_PATH"] = os.path.join(SANDBOX_PYTHON, "lib")
    iso["python"] = exe
    env["HOME"] = env["TMPDIR"] = SANDBOX_WORKDIR

    iso["private_proc"] = False
    if new_pid_ns:
        try:
            _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            iso["private_proc"] = True
        except OSError as e:
            iso["private_proc_error"] = str(e)

    # Everything read-only and nosuid, then /tmp (the private tmpfs) writable again.
    try:
        _mount_setattr(libc, "/", True, attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
        _mount_setattr(libc, "/tmp", False, attr_clr=MOUNT_ATTR_RDONLY)
        iso["readonly_root"] = True
    except OSError as e:
        iso["readonly_root"] = _remount_readonly_fallback(libc, e)
    return SANDBOX_WORKDIR, exe, env


def _remount_readonly_fallback(libc, err: OSError) -> str | bool:
    """Kernels without mount_setattr: remount each mount read-only, one by one."""
    ok = failed = 0
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for mp in points:
        if mp == "/tmp" or mp.startswith("/tmp/"):
            continue
        mp = mp.encode().decode("unicode_escape")
        try:
            _mount(libc, None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
            ok += 1
        except OSError:
            failed += 1
    return True if ok and not failed else (f"partial ({failed} of {ok + failed} mounts failed; "
                                           f"mount_setattr: {err})" if ok else False)


def _exec_worker(libc, cfg, mode, uid, gid, workdir, exe, env) -> None:
    import resource
    lim = cfg["limits"]
    mb = 1024 * 1024

    def setl(which, soft, hard=None):
        resource.setrlimit(which, (soft, soft if hard is None else hard))

    setl(resource.RLIMIT_AS, lim["memory_mb"] * mb)
    setl(resource.RLIMIT_CPU, max(1, int(lim["cpu_s"])), max(1, int(lim["cpu_s"])) + 1)
    setl(resource.RLIMIT_NPROC, cfg["nproc_limit"])
    setl(resource.RLIMIT_FSIZE, lim["max_file_mb"] * mb)
    setl(resource.RLIMIT_CORE, 0)
    setl(resource.RLIMIT_NOFILE, lim["max_open_files"])
    if mode == "root":
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise OSError("privileges were not dropped")
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(workdir)
    os.umask(0o022)
    os.execve(exe, [exe, "-I", "-B", "main.py"], env)


# ----------------------------------------------------------------------------------------------
# Caller side

class _UidPool:
    """Hands out one sandbox uid per concurrent run (RLIMIT_NPROC and signals are per uid).

    Across processes too: each uid in use is held by an exclusive ``flock`` on a file in
    :data:`UID_LOCK_DIR`, so two jobs that score code at the same time (two Snakemake jobs, two
    workflows on one machine) never share a uid, and a uid's leftover processes are only swept by
    the one who holds its lock (they belong to a run that died without releasing it).
    """

    def __init__(self, base: int, size: int):
        self.base, self.size = base, size
        self._used: dict[int, int] = {}  # uid -> fd of its lock file
        self._lock = threading.Lock()

    @staticmethod
    def _try_lock(uid: int) -> int | None:
        import fcntl

        os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(UID_LOCK_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # another process's run holds it
        return fd

    def acquire(self) -> int:
        import pwd
        with self._lock:
            for uid in range(self.base, self.base + self.size):
                if uid in self._used:
                    continue
                try:
                    pwd.getpwuid(uid)
                    continue  # a real account: never touch it
                except KeyError:
                    pass
                fd = self._try_lock(uid)
                if fd is None:
                    continue
                if processes_of_uid(uid) and not _kill_uid(uid):
                    os.close(fd)
                    continue  # leftovers we could not clear
                self._used[uid] = fd
                return uid
        raise SandboxError("no free sandbox uid")

    def release(self, uid: int) -> None:
        with self._lock:
            fd = self._used.pop(uid, None)
        if fd is not None:
            os.close(fd)  # closing drops the flock


#: Where the pool's per-uid lock files live (root only: the pool is used when the caller is root).
UID_LOCK_DIR = "/run/ipcond-sandbox-uids" if os.path.isdir("/run") and os.access("/run", os.W_OK) else os.path.join(
    tempfile.gettempdir(), "ipcond-sandbox-uids")
_POOL = _UidPool(UID_BASE, UID_POOL_SIZE)


def processes_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real or effective uid is ``uid`` (a /proc scan)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                text = f.read()
        except OSError:
            continue
        state = uids = None
        for line in text.splitlines():
            if line.startswith("State:"):
                state = line.split()[1]
            elif line.startswith("Uid:"):
                uids = [int(x) for x in line.split()[1:3]]
                break
        if uids and uid in uids and state != "Z":
            pids.append(int(name))
    return pids


def _kill_uid(uid: int, rounds: int = 20) -> bool:
    """SIGKILL every process of ``uid`` (``kill -9 -1`` run *as* that uid is atomic vs forks)."""
    kill_bin = shutil.which("kill", path="/usr/bin:/bin")
    for _ in range(rounds):
        pids = processes_of_uid(uid)
        if not pids:
            return True
        if kill_bin and os.geteuid() == 0:
            try:
                subprocess.run([kill_bin, "-s", "KILL", "--", "-1"], user=uid, group=uid,
                               extra_groups=[], env={}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=5, cwd="/")
            except (OSError, subprocess.SubprocessError):
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
    return not processes_of_uid(uid)


def _strangers_can_run(exe: str, prefix: str) -> bool:
    """Whether a uid that is neither owner nor group member can run ``exe`` and read its stdlib."""
    def dirs_open(path: str) -> bool:
        parts = os.path.realpath(path).split("/")
        for i in range(2, len(parts) + 1):
            p = "/".join(parts[:i]) or "/"
            try:
                st = os.stat(p)
            except OSError:
                return False
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o001:
                return False
        return True

    stdlib = os.path.join(prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    try:
        return (dirs_open(exe) and bool(os.stat(exe).st_mode & 0o001) and dirs_open(stdlib)
                and bool(os.stat(os.path.join(stdlib, "os.py")).st_mode & 0o004))
    except OSError:
        return False


def _python_info() -> dict:
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if not exe.startswith(prefix + os.sep):
        cand = os.path.join(prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
        exe = cand if os.path.exists(cand) else exe
    return {"python_exe": exe, "python_prefix": prefix,
            "python_exe_rel": os.path.relpath(exe, prefix)}


def _count_processes_of(uid: int) -> int:
    return len(processes_of_uid(uid))


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str | None = None, *,
               network_isolation: str = "required", mode: str = "auto",
               uid: int | None = None, _namespaces: bool = True) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox and return what happened.

    ``network_isolation``: ``"required"`` (default; raise :class:`SandboxUnavailable` when no
    network namespace can be made) or ``"best_effort"``. ``mode``: ``"root"`` (drop to a sandbox
    uid; needs root), ``"userns"`` (unprivileged user namespace, the invoking uid), or ``"auto"``
    (root when running as root). ``uid``: a fixed sandbox uid instead of the pool -- it must not be
    used by anything else, because leftovers of that uid are killed.
    ``_namespaces=False`` (tests only) skips the namespaces, to exercise the refusal and
    fallback paths.
    """
    if network_isolation not in ("required", "best_effort"):
        raise ValueError(f"network_isolation must be 'required' or 'best_effort', "
                         f"not {network_isolation!r}")
    if mode == "auto":
        mode = "root" if os.geteuid() == 0 else "userns"
    if mode not in ("root", "userns"):
        raise ValueError(f"mode must be 'auto', 'root' or 'userns', not {mode!r}")
    if mode == "root" and os.geteuid() != 0:
        raise SandboxUnavailable("mode='root' needs root")
    limits = limits or SandboxLimits()

    pooled = mode == "root" and uid is None
    if mode == "root":
        run_uid = _POOL.acquire() if pooled else int(uid)
        if run_uid == 0:
            raise ValueError("the sandbox uid must not be 0")
        run_gid = run_uid
        nproc = limits.max_processes
    else:
        run_uid, run_gid = os.getuid(), os.getgid()
        # RLIMIT_NPROC counts all processes of the user (per user namespace on Linux >= 5.14).
        nproc = limits.max_processes + _count_processes_of(run_uid)

    rootdir = tempfile.mkdtemp(prefix="ipcond-sandbox-")
    proc = None
    t0 = time.monotonic()
    try:
        pyinfo = _python_info()
        needs_bind = mode == "root" and not _strangers_can_run(pyinfo["python_exe"],
                                                                pyinfo["python_prefix"])
        code_path = os.path.join(rootdir, "code.py")
        with open(os.open(code_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                  encoding="utf-8") as f:
            f.write(code)
        fallback_work = os.path.join(rootdir, "work")
        os.mkdir(fallback_work, 0o700)
        if mode == "root":
            os.chmod(rootdir, 0o711)
            os.chown(fallback_work, run_uid, run_gid)
        cfg = {
            "parent_pid": os.getpid(), "mode": mode, "uid": run_uid, "gid": run_gid,
            "network_isolation": network_isolation, "limits": asdict(limits),
            "namespaces": bool(_namespaces),
            "nproc_limit": nproc, "tmpfs_mb": limits.tmpfs_mb,
            "status_path": os.path.join(rootdir, "status.jsonl"), "code_path": code_path,
            "fallback_workdir": fallback_work, "python_needs_bind": needs_bind,
            "env": {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"},
            **pyinfo,
        }
        cfg_path = os.path.join(rootdir, "config.json")
        with open(os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(cfg, f)
        stdin_file = None
        if stdin is not None:
            stdin_path = os.path.join(rootdir, "stdin")
            with open(os.open(stdin_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                      encoding="utf-8") as f:
                f.write(stdin)
            stdin_file = open(stdin_path, "rb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), "--launch", cfg_path],
                stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=rootdir,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True, close_fds=True)
        finally:
            if stdin_file is not None:
                stdin_file.close()
        out, err, timed_out = _collect(proc, t0 + limits.wall_s, limits.max_output_bytes)
        _kill_group(proc)
        proc.wait()
        wall = time.monotonic() - t0
    finally:
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        if mode == "root":
            _kill_uid(run_uid)
        status = _read_status(os.path.join(rootdir, "status.jsonl"))
        shutil.rmtree(rootdir, ignore_errors=True)
        if pooled:
            _POOL.release(run_uid)

    iso = dict(status.get("isolation", {}))
    if "error" in status:  # only trusted code (launcher, reaper, worker before exec) writes it
        msg = status["error"]
        if "network" in msg or "not readable by the sandbox uid" in msg:
            raise SandboxUnavailable(msg)
        raise SandboxError(msg)
    if not iso and not timed_out:
        raise SandboxError(f"sandbox launcher failed (exit {proc.returncode}): "
                           f"{err[0][-2000:].decode(errors='replace')}")
    iso.update({
        "uid": run_uid if mode == "root" else os.getuid(),
        "privileges_dropped": mode == "root" or (mode == "userns" and run_uid != 0),
        "no_new_privs": True, "environment": "minimal (nothing inherited)",
        "rlimits": {"address_space_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
                    "processes": nproc, "file_size_mb": limits.max_file_mb, "core": 0,
                    "open_files": limits.max_open_files},
        "wall_timeout_s": limits.wall_s, "process_group_kill": True,
        "uid_sweep": mode == "root",
    })
    iso.setdefault("network", "unknown (timed out before the launcher reported)")

    returncode = status.get("exit")
    if timed_out and returncode is None:
        returncode = -signal.SIGKILL
    killed = -returncode if isinstance(returncode, int) and returncode < 0 else None
    stdout, out_trunc, out_n = _decode(out, limits.max_output_bytes)
    stderr, err_trunc, err_n = _decode(err, limits.max_output_bytes)
    mem = any(s in stderr for s in ("MemoryError", "Cannot allocate memory", "bad_alloc",
                                    "cannot allocate memory"))
    cpu = killed == signal.SIGXCPU or (killed == signal.SIGKILL and not timed_out)
    return SandboxResult(returncode=returncode, stdout=stdout, stderr=stderr, timed_out=timed_out,
                         killed_by_signal=killed, memory_exceeded=mem, cpu_exceeded=cpu,
                         output_truncated=out_trunc or err_trunc, wall_s=wall, isolation=iso,
                         stdout_bytes=out_n, stderr_bytes=err_n)


def _collect(proc: subprocess.Popen, deadline: float, keep: int):
    """Read stdout/stderr until both close or the deadline passes; keep ``keep`` bytes of each."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    totals = dict.fromkeys(bufs, 0)
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out = False
    grace_end = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if grace_end is None and proc.poll() is not None:
                grace_end = now + 0.5  # launcher gone; stragglers may hold the pipes
            if grace_end is not None and now >= grace_end:
                break
            limit = min(deadline, grace_end or deadline) - now
            for key, _ in sel.select(timeout=min(limit, 0.1)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                totals[fd] += len(chunk)
                room = keep - len(bufs[fd])
                if room > 0:
                    bufs[fd] += chunk[:room]
    finally:
        sel.close()
    if timed_out:
        _kill_group(proc)
    res = []
    for fd in bufs:
        res.append((bytes(bufs[fd]), totals[fd]))
    proc.stdout.close()
    proc.stderr.close()
    return res[0], res[1], timed_out


def _decode(buf_total, keep: int):
    data, total = buf_total
    text = data.decode("utf-8", errors="replace")
    truncated = total > len(data)
    if truncated:
        text += f"\n[ipcond.sandbox: output truncated to {keep} bytes; {total - len(data)} " \
                f"bytes dropped]"
    return text, truncated, total


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(path: str) -> dict:
    out: dict = {}
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        stage = rec.get("stage")
        if stage == "isolation":
            out["isolation"] = rec["isolation"]
        elif stage == "exit":
            out["exit"] = rec["status"]
        elif stage == "error":
            out.setdefault("error", rec["error"])
    return out


_PROBE: dict | None = None
_PROBE_LOCK = threading.Lock()


def probe_isolation() -> dict:
    """Which protections work on this machine (cached): the isolation report of a trivial run."""
    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is None:
            try:
                r = run_python("print('ok')", network_isolation="best_effort")
                _PROBE = dict(r.isolation, works=r.stdout.strip() == "ok", stderr=r.stderr[-500:])
            except SandboxError as e:
                _PROBE = {"works": False, "error": str(e), "network": "none"}
        return dict(_PROBE)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch":
    _launcher_main(sys.argv[2])
