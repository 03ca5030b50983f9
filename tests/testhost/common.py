"""What every part of the harness shares: suites, the cache and runtime dirs, errors, host checks, and
small helpers (running a host command, file locks, the tail of a log, threads for a cluster's members)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

log = logging.getLogger("gangway.testhost")

SUITES = ("trixie", "bookworm")  # the first is the default
DEFAULT_SUITE = SUITES[0]

# Paths.  The cache survives reboots (images, the harness SSH key); the runtime dir does not, and
# neither do the network namespaces and processes it describes.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gangway" / "testhost"
RUN_DIR = Path("/run/gangway-testhost")
STATE_LOCK = RUN_DIR / "state.lock"  # held while hosts are recorded, reaped or taken down

# Host commands and the Debian package that provides each.
TOOL_PACKAGES = {
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "cp": "coreutils",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "tinyproxy": "tinyproxy",
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
    "openssl": "openssl",
}
IMAGE_TOOLS = ("debootstrap", "chroot", "ssh-keygen")
START_TOOLS = tuple(TOOL_PACKAGES)


class TestHostError(RuntimeError):
    """The harness could not do what was asked; the message says why."""


class HostSetupError(TestHostError):
    """This machine cannot run test hosts (not root, a package missing)."""


def require_host(tools=START_TOOLS) -> None:
    """Raise HostSetupError (one line) unless we are root and the commands TOOLS exist."""
    if os.geteuid() != 0:
        raise HostSetupError("must run as root (debootstrap, systemd-nspawn and ip netns need it)")
    # root's tools live in sbin, which a PATH inherited through `su` or sudo may lack.
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    missing = sorted({TOOL_PACKAGES[t] for t in tools if shutil.which(t) is None})
    if missing:
        raise HostSetupError(f"missing host package(s): apt-get install {' '.join(missing)}")


def check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise TestHostError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")


def run(argv: list[str], what: str | None = None, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run a host command; raise TestHostError with its output when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise TestHostError(f"{what or shlex.join(argv)}: no answer within {timeout} s") from None
    if done.returncode != 0:
        out = (done.stderr or done.stdout).strip()
        raise TestHostError(f"{what or shlex.join(argv)} failed ({done.returncode}): {out}")
    return done


@contextlib.contextmanager
def flock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join("  " + line for line in text)


def locked_by_another(path: Path, lock=fcntl.lockf, create: bool = False) -> bool:
    """Whether another process holds a lock on PATH (tested by trying to take it, then letting go)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return False
    try:
        lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops our test lock


def in_parallel(fn, items) -> None:
    """FN(item) for each of ITEMS, each in a thread of its own; once all have ended, raise the first error."""
    errors = []

    def one(item) -> None:
        try:
            fn(item)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
