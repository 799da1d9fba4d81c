"""A throw-away single-node Slurm for the tests (Debian's slurm-wlm 22.05 and munge; no Docker).

``SlurmCluster(folder).start()`` writes a munge key and a ``slurm.conf`` into ``folder`` and starts
``munged``, ``slurmctld`` and ``slurmd`` in the foreground as children of the test process (their
PIDs are kept; :meth:`SlurmCluster.close` cancels the jobs left and ends each daemon by its PID).
Everything lives in the folder: munge socket, state, spool, logs, PID files; ports are free ones.
The plugins are the ones that work in a container without systemd or a writable cgroup tree:
``proctrack/linuxproc``, ``task/none``, no accounting, no cgroup. Clients (``sbatch``, ``squeue``)
find it through ``SLURM_CONF`` (:attr:`SlurmCluster.env`).

If the binaries are missing they are installed through tests/syspkgs.py (under pytest the session
hook in tests/conftest.py has already done it); if that fails, :class:`SlurmUnavailable` is raised and
the fixture FAILS (never a skip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

try:
    from tests import syspkgs
except ImportError:  # pragma: no cover - rootdir not on sys.path
    import syspkgs  # type: ignore[no-redef]

__all__ = ["SlurmCluster", "SlurmUnavailable"]

PACKAGES = ["slurm-wlm", "munge"]
SBIN = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/bin", os.environ.get("PATH", "")])


class SlurmUnavailable(RuntimeError):
    """Slurm or munge could not be installed or started (the message says which and why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _which(name: str) -> str:
    path = shutil.which(name, path=SBIN)
    if path is None:
        raise SlurmUnavailable(f"{name} not found after installing {', '.join(PACKAGES)}")
    return path


class SlurmCluster:
    def __init__(self, folder: Path) -> None:
        self.dir = Path(folder)
        self.node = socket.gethostname()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.conf = self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment additions for the clients (sbatch, squeue, scancel)."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> SlurmCluster:
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test Slurm runs its daemons as root (SlurmUser=root)")
        try:
            syspkgs.ensure(PACKAGES)
        except syspkgs.AptFailed as exc:
            raise SlurmUnavailable(str(exc)) from exc
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
            self._wait_idle(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start_munge(self) -> None:
        m = self.dir / "munge"
        m.mkdir(mode=0o711, parents=True)
        key = m / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn("munged", [_which("munged"), "-F", "--force", f"--socket={m / 'munge.sock'}",
                               f"--key-file={key}", f"--pid-file={m / 'munged.pid'}",
                               f"--seed-file={m / 'munged.seed'}", f"--log-file={m / 'munged.log'}"])
        deadline = time.monotonic() + 20
        while not (m / "munge.sock").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"munged did not create its socket: {self._logs()}")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log"):
            (d / sub).mkdir()
        cpus = os.cpu_count() or 1
        self.conf.write_text(f"""ClusterName=hpstest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d / 'munge' / 'munge.sock'}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.dir / f"{name}.out", "wb")  # noqa: SIM115 - the daemon's stdout for its lifetime
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, **self.env})
        log.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with {p.returncode}: {self._logs()}")

    def _logs(self) -> str:
        tails = []
        for path in sorted(self.dir.glob("*.out")) + sorted((self.dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                tails.append(f"[{path.name}] " + " | ".join(path.read_text(errors="replace").splitlines()[-5:]))
        return " ".join(tails)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            r = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                return
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"the node is not idle after {timeout:.0f} s ({r.stdout.strip()!r} "
                                       f"{r.stderr.strip()!r}): {self._logs()}")
            time.sleep(0.5)

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A Slurm client command (sinfo, sbatch, squeue, scancel) against this cluster."""
        full = {**os.environ, **(env or {}), **self.env}
        r = subprocess.run([_which(args[0]), *args[1:]], env=full, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()} {self._logs()}")
        return r

    def close(self) -> None:
        """Cancel the jobs left, then end each daemon by its PID (slurmd, slurmctld, munged)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError, SlurmUnavailable):
                self.run("scancel", "--full", "--user=root", check=False, timeout=20)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
