"""The Debian packages the test suite needs, installed once per machine in ONE apt-get call.

``PACKAGES`` maps each package to a probe (a binary path or a name looked up on PATH) that tells
whether it is installed. :func:`ensure` installs the missing ones of a list with a single
``apt-get install -y --no-install-recommends ...`` (``apt-get update`` first only if that fails),
under an exclusive file lock, so two processes never run apt at once: the second waits, then finds
everything installed and does nothing.

tests/conftest.py calls :func:`ensure` for every package from the xdist controller (or the only
process without xdist) before any test runs; the per-fixture calls (tests/pg.py, the dashboard's
Chromium) are the fallback when a single file is run another way, and find nothing to do after it.
Nothing happens when we are not root or there is no apt-get: the test that needs the binary then
fails with its own message (never a skip).
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable

__all__ = ["PACKAGES", "missing", "ensure", "AptFailed"]

LOCK_FILE = "/tmp/hpsearch-tests-apt.lock"


def _on_path(*names: str) -> Callable[[], bool]:
    dirs = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    return lambda: any(shutil.which(n, path=dirs) for n in names)


def _pg15() -> bool:
    return any(os.path.isfile(os.path.join(d, "initdb")) for d in glob.glob("/usr/lib/postgresql/*/bin"))


#: package -> probe (True when installed). Add a package here, not an apt-get call in a test.
PACKAGES: dict[str, Callable[[], bool]] = {
    "postgresql-15": _pg15,
    "chromium": _on_path("chromium", "chromium-browser"),
    "chromium-driver": _on_path("chromedriver"),
    "pgbouncer": _on_path("pgbouncer"),
    # a single-node Slurm for deploy/slurm (tests/slurm.py): the daemons, the client and its auth
    "slurm-wlm": lambda: _on_path("slurmctld")() and _on_path("slurmd")() and _on_path("sbatch")(),
    "munge": _on_path("munged"),
}


class AptFailed(RuntimeError):
    """apt-get could not install the packages (the message holds the tail of its stderr)."""


def missing(names: Iterable[str] | None = None) -> list[str]:
    """The packages of ``names`` (default: all of :data:`PACKAGES`) whose probe fails."""
    return [n for n in (PACKAGES if names is None else names) if not PACKAGES[n]()]


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def ensure(names: Iterable[str] | None = None, timeout: float = 1800) -> list[str]:
    """Install the missing packages of ``names`` in one apt-get call; return those installed.

    Raises :class:`AptFailed` when apt-get fails twice (before and after ``apt-get update``).
    Returns [] without doing anything when nothing is missing or we cannot install.
    """
    wanted = list(PACKAGES if names is None else names)
    if not missing(wanted) or not can_install():
        return []
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process installing: wait, then re-check
        todo = missing(wanted)
        if not todo:
            return []
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *todo]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=timeout)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AptFailed(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
        return todo
