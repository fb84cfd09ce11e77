"""A one-node SLURM cluster on this machine, for tests.

Debian's slurm-wlm with munge, MariaDB and slurmdbd, started as plain background processes (no
systemd), each in its own session, PIDs recorded and stopped by PID. Everything lives in one
temporary folder (MariaDB's datadir, SLURM's state and spool, logs) except:

- ``/etc/slurm/slurm.conf``: the SLURM executor plugin's in-job step removes every ``SLURM_*``
  variable (``SLURM_CONF`` too), so jobs only find the configuration at the default path. It is
  written only where none exists, carries a marker line, and is removed on stop.
- munge's default socket (``/run/munge/munge.socket.2``): a munged already answering there is
  reused; otherwise one is started there with a key in the temporary folder. With the default
  socket every SLURM client (sbatch, sacct, sacctmgr, srun inside a job) finds munge unaided.

Daemons listen on free ports picked at start (MariaDB on 127.0.0.1 only), so stock daemons
(systemd's MariaDB on 3306, a slurmctld on 6817) do not clash. See docs/cluster.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge", "mariadb-server", "slurmdbd"]
# Each entry: the alternatives (MariaDB renamed its binaries; the old names are links).
BINARIES = [("slurmctld",), ("slurmd",), ("slurmdbd",), ("sbatch",), ("srun",), ("sacct",), ("sacctmgr",),
            ("scontrol",), ("squeue",), ("sinfo",), ("scancel",), ("munged",), ("munge",),
            ("mariadbd", "mysqld"), ("mariadb-install-db", "mysql_install_db")]
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MARKER = "# Written by ipcond's tests/slurm_cluster.py for a test cluster; removed when it stops."
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin",
                               "/usr/bin", "/bin"])


class Unavailable(Exception):
    """SLURM cannot be installed or started here for a reason outside the test (the test skips)."""


def which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name, path=SEARCH_PATH)
        if found:
            return found
    return None


def missing_binaries() -> list[str]:
    return ["/".join(alts) for alts in BINARIES if which(*alts) is None]


def _tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def ensure_installed(log=print) -> float:
    """Installs Debian's SLURM, munge and MariaDB where a binary is missing; returns the seconds
    it took (0 when nothing was missing). Raises Unavailable naming what failed.

    Services are kept from starting on install (a ``policy-rc.d`` answering 101, as in Debian
    containers), so that no stock daemon is left running; the test starts its own.
    """
    missing = missing_binaries()
    if not missing:
        return 0.0
    what = f"SLURM is not installed (missing: {', '.join(missing)})"
    if os.geteuid() != 0:
        raise Unavailable(f"{what} and installing it needs root (running as uid {os.geteuid()})")
    apt = which("apt-get")
    if apt is None:
        raise Unavailable(f"{what} and there is no apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120",
               "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", *PACKAGES]
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    t0 = time.monotonic()
    outputs = []
    try:
        if not policy.exists():
            policy.write_text("#!/bin/sh\n# ipcond tests: no service starts while installing SLURM\nexit 101\n")
            policy.chmod(0o755)
            made_policy = True
        log(f"installing {' '.join(PACKAGES)} with apt-get")
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        outputs.append(proc.stdout + proc.stderr)
        if proc.returncode != 0:  # stale or missing package lists: update once, then retry
            log("apt-get install failed; running apt-get update and retrying")
            upd = subprocess.run([apt, "update", "-q", "-o", "DPkg::Lock::Timeout=120"], env=env,
                                 capture_output=True, text=True, timeout=600)
            outputs.append(upd.stdout + upd.stderr)
            proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
            outputs.append(proc.stdout + proc.stderr)
    except (OSError, subprocess.TimeoutExpired) as err:
        _repair_dpkg(env)
        raise Unavailable(f"{what}; apt-get install {' '.join(PACKAGES)} failed: {err}") from err
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    if proc.returncode != 0:
        _repair_dpkg(env)
        raise Unavailable(f"{what}; apt-get install {' '.join(PACKAGES)} failed (exit {proc.returncode}, "
                          f"no network or no package repository?):\n{_tail(outputs[-1], 1500)}")
    still = missing_binaries()
    if still:
        raise Unavailable(f"apt-get installed {' '.join(PACKAGES)} but these are still missing: {', '.join(still)}")
    return time.monotonic() - t0


def _repair_dpkg(env: dict) -> None:
    """Leaves dpkg consistent after a failed install (configures anything left half-installed)."""
    try:
        audit = subprocess.run(["dpkg", "--audit"], capture_output=True, text=True, timeout=60)
        if audit.stdout.strip():
            subprocess.run(["dpkg", "--configure", "-a"], env=env, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _now_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class OneNodeSlurm:
    """munged, MariaDB, slurmdbd, slurmctld and slurmd on this machine: one node in partitions
    ``partitions`` (the first is the default), ``account`` created for the current user.

    Use as a context manager: stop() runs on exit, also after a failed start.
    """

    def __init__(self, root: Path, partitions: list[str], account: str, cluster: str = "ipcondtest",
                 log=print):
        self.root = Path(root)
        self.partitions = partitions
        self.account = account
        self.cluster = cluster
        self.log = log
        self.host = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.wrote_conf = False
        self.made_munge_dir = False
        self.started_at: int | None = None  # clock ticks since boot, to find this cluster's slurmstepd
        self.timings: dict[str, float] = {}
        self.ports = {}

    # -- helpers ---------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        logf = open(self.root / "logs" / f"{name}.out", "ab")
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, cwd=self.root)
        finally:
            logf.close()
        self.procs[name] = proc
        self.log(f"started {name} (pid {proc.pid})")
        return proc

    def _wait(self, what: str, ready, timeout: float, proc_name: str | None = None) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ready():
                return
            if proc_name and self.procs[proc_name].poll() is not None:
                raise RuntimeError(f"{proc_name} exited with {self.procs[proc_name].returncode} while "
                                   f"waiting for {what}\n{self.logs(proc_name)}")
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs(proc_name)}")

    @staticmethod
    def _ok(cmd: list[str], timeout: float = 10) -> bool:
        try:
            return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([which(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def logs(self, name: str | None = None, n: int = 2500) -> str:
        """The tail of one daemon's log files (or of all of them)."""
        out = []
        for path in sorted((self.root / "logs").glob(f"{name or ''}*")):
            if path.suffix == ".out" and path.with_suffix(".log").exists() and path.with_suffix(".log").stat().st_size:
                continue  # the daemon's log file has the same lines (foreground daemons copy them)
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                out.append(f"--- {path.name}\n{_tail(text, n)}")
        return "\n".join(out)

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> "OneNodeSlurm":
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise Unavailable(f"a test cluster needs root (running as uid {os.geteuid()}): slurmd starts jobs "
                              f"as their user, and the configuration goes to {SLURM_CONF}")
        if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
            raise Unavailable(f"{SLURM_CONF} exists and was not written by this test: this machine "
                              "belongs to a SLURM cluster, whose configuration the test will not replace")
        for sub in ("logs", "etc", "state", "spool", "munge", "mysql", "tmp"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.started_at = _now_ticks()
        self.ports = {"mariadb": free_port(), "slurmdbd": free_port(), "slurmctld": free_port(),
                      "slurmd": free_port()}
        self._start_munge()
        self._start_mariadb()
        self._write_configs()
        self._start_slurmdbd()
        self._start_slurmctld()
        self._start_slurmd()
        self.timings["start"] = time.monotonic() - t0
        self.log(f"one-node SLURM up in {self.timings['start']:.1f} s: node {self.host}, "
                 f"partitions {self.partitions}, account {self.account}")
        return self

    def _start_munge(self) -> None:
        if self._ok([which("munge"), "-n"], timeout=5):
            self.log(f"reusing the munged already answering on {MUNGE_SOCKET}")
            return
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        if not MUNGE_SOCKET.parent.exists():
            MUNGE_SOCKET.parent.mkdir(parents=True)
            MUNGE_SOCKET.parent.chmod(0o711)
            self.made_munge_dir = True
        d = self.root / "munge"
        self._spawn("munged", [which("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={MUNGE_SOCKET}", f"--pid-file={d / 'munged.pid'}",
                               f"--log-file={self.root / 'logs' / 'munged.log'}",
                               f"--seed-file={d / 'munged.seed'}", "--num-threads=2"])
        self._wait("munged", lambda: self._ok([which("munge"), "-n"], timeout=5), 20, "munged")

    def _start_mariadb(self) -> None:
        datadir = self.root / "mysql"
        install = self.run(which("mariadb-install-db", "mysql_install_db"), "--no-defaults",
                           f"--datadir={datadir}", "--user=root", "--auth-root-authentication-method=normal",
                           "--skip-test-db", "--skip-name-resolve", timeout=120, check=False)
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {_tail(install.stdout + install.stderr)}")
        # No grant tables: the server listens on 127.0.0.1 only, on a free port, for this test.
        self._spawn("mariadb", [which("mariadbd", "mysqld"), "--no-defaults", f"--datadir={datadir}",
                                "--user=root", "--bind-address=127.0.0.1", f"--port={self.ports['mariadb']}",
                                f"--socket={self.root / 'tmp' / 'mysqld.sock'}",
                                f"--pid-file={self.root / 'tmp' / 'mysqld.pid'}",
                                f"--log-error={self.root / 'logs' / 'mariadb.log'}", f"--tmpdir={self.root / 'tmp'}",
                                "--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin",
                                "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
                                "--innodb-doublewrite=0"])
        self._wait("MariaDB", lambda: port_open(self.ports["mariadb"]), 60, "mariadb")

    def _write_configs(self) -> None:
        r, p = self.root, self.ports
        ncpu = os.cpu_count() or 1
        nodes = [f"NodeName={self.host} NodeHostname={self.host} NodeAddr=127.0.0.1 "
                 # config_overrides (below): the node is declared larger than this machine (4 CPUs,
                 # 64 GiB), so the profile's production memory requests are accepted. Memory is
                 # not a consumable resource here (CR_Core) and nothing enforces it.
                 f"CPUs={max(ncpu, 4)} RealMemory=65536 State=UNKNOWN"]
        parts = [f"PartitionName={name} Nodes={self.host} Default={'YES' if i == 0 else 'NO'} "
                 "MaxTime=INFINITE State=UP" for i, name in enumerate(self.partitions)]
        conf = [
            MARKER,
            f"ClusterName={self.cluster}",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={p['slurmctld']}",
            f"SlurmdPort={p['slurmd']}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobContainerType=job_container/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "MailProg=/bin/true",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'tmp' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'tmp' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'logs' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'logs' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "KillWait=5",
            "InactiveLimit=0",
            "MinJobAge=300",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            # Accounting as on a production cluster: the plugin asks sacct for job states, and
            # jobs need a valid account.
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={p['slurmdbd']}",
            "AccountingStorageEnforce=associations",
            "AccountingStoreFlags=job_comment",
            *nodes,
            *parts,
        ]
        text = "\n".join(conf) + "\n"
        (r / "etc" / "slurm.conf").write_text(text)  # slurmdbd finds slurmdbd.conf next to it
        dbd = r / "etc" / "slurmdbd.conf"
        dbd.write_text("\n".join([
            "AuthType=auth/munge",
            f"DbdHost={self.host}",
            "DbdAddr=127.0.0.1",
            f"DbdPort={p['slurmdbd']}",
            "SlurmUser=root",
            "DebugLevel=info",
            f"LogFile={r / 'logs' / 'slurmdbd.log'}",
            f"PidFile={r / 'tmp' / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={p['mariadb']}",
            "StorageUser=root",
            "StorageLoc=slurm_acct_db",
        ]) + "\n")
        dbd.chmod(0o600)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(text)
        self.wrote_conf = True

    def _start_slurmdbd(self) -> None:
        env = {**os.environ, "SLURM_CONF": str(self.root / "etc" / "slurm.conf")}
        self._spawn("slurmdbd", [which("slurmdbd"), "-D"], env=env)
        self._wait("slurmdbd", lambda: self._ok([which("sacctmgr"), "-n", "list", "cluster"]), 60, "slurmdbd")
        user = self._user()
        for cmd in (["add", "cluster", self.cluster],
                    ["add", "account", self.account, f"Cluster={self.cluster}", "Description=test",
                     "Organization=test"],
                    ["add", "user", user, f"Account={self.account}", f"Cluster={self.cluster}"]):
            proc = self.run("sacctmgr", "-i", *cmd, check=False)
            if proc.returncode != 0 and "already exists" not in (proc.stdout + proc.stderr).lower():
                raise RuntimeError(f"sacctmgr {' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")

    @staticmethod
    def _user() -> str:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name

    def _start_slurmctld(self) -> None:
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i"])
        self._wait("slurmctld", lambda: "UP" in self.run("scontrol", "ping", check=False).stdout, 60, "slurmctld")

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", [which("slurmd"), "-D"])

        def idle() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            return len(out) >= 2 and out[1].startswith("idle")

        self._wait(f"node {self.host} to be idle", idle, 60, "slurmd")

    # -- queries ---------------------------------------------------------------------------------

    def sacct(self, *fields: str) -> list[dict]:
        """One dict per job of the last day (allocations only, no steps)."""
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 86400))
        out = self.run("sacct", "-X", "-a", "-n", "-P", f"--starttime={since}", "--endtime=now",
                       f"--format={','.join(fields)}").stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]

    # -- stop ------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Cancels every job, stops every daemon this object started (newest first) and removes
        the configuration it wrote. Returns the processes still alive afterwards (none expected)."""
        t0 = time.monotonic()
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=15).stdout.split()
            if jobs:
                self.log(f"cancelling jobs still queued or running: {' '.join(jobs)}")
                self.run("scancel", *jobs, check=False, timeout=15)
                end = time.monotonic() + 20
                while time.monotonic() < end and self.run("squeue", "-h", check=False, timeout=15).stdout.strip():
                    time.sleep(0.5)
        for name, proc in reversed(list(self.procs.items())):
            self._terminate(name, proc)
        # Job steps outlive slurmd when their jobs could not be cancelled: any slurmstepd started
        # since this cluster started, with the job processes under it.
        for pid in self._stray_stepds():
            tree = [pid, *_descendants(pid)]
            self.log(f"killing a stray slurmstepd and its processes: {tree}")
            for p in tree:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.wrote_conf and SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text(errors="replace"):
            SLURM_CONF.unlink()
        self.wrote_conf = False
        if self.made_munge_dir:
            try:
                MUNGE_SOCKET.parent.rmdir()  # only if empty: munged removes its socket and lock
            except OSError:
                pass
            self.made_munge_dir = False
        self.timings["stop"] = time.monotonic() - t0
        time.sleep(0.2)
        alive = [f"{name} (pid {proc.pid})" for name, proc in self.procs.items() if _alive(proc.pid)]
        alive += [f"slurmstepd (pid {pid})" for pid in self._stray_stepds()]
        return alive

    def _terminate(self, name: str, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.log(f"{name} (pid {proc.pid}) ignored SIGTERM; killing its process group")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        # Anything left in the daemon's own session (it was started with a new one).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _stray_stepds(self) -> list[int]:
        if self.started_at is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm == "slurmstepd" and (_start_ticks(int(entry.name)) or 0) >= self.started_at \
                    and _alive(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def __enter__(self) -> "OneNodeSlurm":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        alive = self.stop()
        if alive and exc[0] is None:
            raise RuntimeError(f"processes left after stopping the test cluster: {', '.join(alive)}")
