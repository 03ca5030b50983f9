"""A test host: the server a test drives (``TestHost``), starting one (``start``), and the hosts started by
``python -m tests.testhost up`` (``find``, ``reboot_detached``, ``down``).

Starting a host claims a slot and records it (state.py), makes its network (network.py), boots the container
on a copy of the cached image (image.py) and starts its proxy and pebble (processes.py), then waits until root
can log in over SSH and systemd says the boot is finished."""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import network
from .common import (DEFAULT_SUITE, RUN_DIR, START_TOOLS, STATE_LOCK, TestHostError, check_suite, flock, log,
                     require_host, run, tail)
from .image import COPY_TIMEOUT, HOSTS_DIR, PASSWORD, PASSWORD_USER, ensure_image, ensure_ssh_key, remove_copy
from .processes import (NSPAWN_STOP_TIMEOUT, PEBBLE_PORT, alive, children, poll, record, send_signal, spawn,
                        start_helpers, terminate, timeout_error, wait_gone)
from .state import load_states, reap_orphans, reap_stale, state_path, teardown, write_state

if TYPE_CHECKING:
    from .cluster import Cluster

# Bounded waits, in seconds.
SSH_READY_TIMEOUT = 120
BOOT_FINISHED_TIMEOUT = 120
REBOOT_TIMEOUT = 120


@dataclass
class TestHost:
    """A running throwaway Debian server; ``stop()`` (or leaving the ``with`` block) removes it."""

    __test__ = False  # not a pytest test class

    name: str
    suite: str
    slot: int
    address: str
    gateway: str
    ssh_key: Path
    proxy_url: str
    acme_directory: str
    acme_ca_bundle: Path
    acme_root: Path
    password_user: str = PASSWORD_USER
    password: str = PASSWORD
    persistent: bool = False  # booted on its own copy of the image: reboot() keeps its disk
    _state: dict = field(default_factory=dict, repr=False, compare=False)
    _procs: dict = field(default_factory=dict, repr=False, compare=False)
    _lock_fd: int | None = field(default=None, repr=False, compare=False)
    _done: bool = field(default=False, repr=False, compare=False)

    def ssh_argv(self, command: str | None = None, user: str = "root") -> list[str]:
        """The ``ssh`` command line that runs COMMAND on this host (a login shell if None)."""
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                f"{user}@{self.address}"]
        return argv if command is None else [*argv, command]

    def ssh(self, command: str, user: str = "root", timeout: float = 60) -> subprocess.CompletedProcess:
        """Run COMMAND on the host over SSH with the harness key; returns the completed process."""
        return subprocess.run(self.ssh_argv(command, user), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    @property
    def timings(self) -> dict:
        """Seconds spent in each phase of start and stop, for reports."""
        return self._state.get("timings", {})

    @property
    def powered_on(self) -> float | None:
        """When (``time.monotonic()``) its container was last started: at start, or by ``reboot()``."""
        return self._state.get("powered_on")

    def reboot(self, timeout: float = REBOOT_TIMEOUT) -> float:
        """Power the server off cleanly and on again, as a real reboot does; return the seconds from
        power-off until its SSH server answers (its banner: a provisioned server may refuse root).  Its disk is kept; the network namespace, the proxy and pebble
        keep running.  Only a persistent host can (``start(persistent=True)``).

        Not ``systemctl reboot`` inside: that makes nspawn exit, and nothing would start it again.
        SIGTERM to the nspawn we started powers the container off (units stopped in order); then the
        same nspawn command boots the same directory."""
        if not self.persistent:
            raise TestHostError(f"{self.name} boots an ephemeral copy, which loses its disk when it stops: "
                                "start it with persistent=True to reboot it")
        if self._done:
            raise TestHostError(f"{self.name} is not ours to reboot (stopped, or started by another process)")
        st = self._state
        t0 = time.monotonic()
        nspawn = st["procs"]["nspawn"]
        if not alive(nspawn):
            raise TestHostError(f"{self.name}: its container is not running; " +
                                tail(Path(st["runtime_dir"]) / "nspawn.log"))
        if not terminate(nspawn, self._procs.get("nspawn"), NSPAWN_STOP_TIMEOUT):
            raise TestHostError(f"{self.name}: the container did not power off within {NSPAWN_STOP_TIMEOUT} s "
                                "(killed); " + tail(Path(st["runtime_dir"]) / "nspawn.log"))
        if alive(st.get("leader")):  # nspawn waits for its container: this is only a safety net
            send_signal(st["leader"], signal.SIGKILL)
            wait_gone(st["leader"], None, 5)
        st["leader"] = None
        off = time.monotonic()
        _boot(self)
        try:
            _wait_ssh_banner(self, timeout)
        except BaseException:
            write_state(st)
            raise
        kids = children(st["procs"]["nspawn"]["pid"])
        st["leader"] = record(kids[0]) if kids else None
        done = time.monotonic()
        st.setdefault("reboots", []).append({"off": round(off - t0, 2), "on_to_ssh": round(done - off, 2)})
        write_state(st)
        log.info("%s rebooted: off in %.1f s, SSH after %.1f s more", self.name, off - t0, done - off)
        return round(done - t0, 2)

    def stop(self) -> None:
        """Tear down the container, its services and network.  Safe to call more than once."""
        if self._done:
            return
        _LIVE.pop(self.name, None)
        t0 = time.monotonic()
        try:
            teardown(self._state, self._procs)
        finally:
            self._done = True
            self._state.setdefault("timings", {})["stop"] = round(time.monotonic() - t0, 2)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> TestHost:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _detach(self) -> None:
        """Hand the host over to its container: it outlives this process, ``down`` removes it."""
        _LIVE.pop(self.name, None)
        self._state["owner"] = self._state["procs"]["nspawn"]
        self._state["detached"] = True
        write_state(self._state)
        self._procs.clear()
        self._done = True  # no longer ours to stop
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def start(suite: str = DEFAULT_SUITE, name: str | None = None, image: Path | None = None,
          persistent: bool = False) -> TestHost:
    """Boot a fresh server from IMAGE (default: the cached image of SUITE); wait until ready.

    By default on an ephemeral copy (``systemd-nspawn -x``): quicker to start, gone when it stops.
    PERSISTENT boots its own copy of the image instead, so that ``reboot()`` keeps its disk; the copy
    is removed at teardown (or by ``reap_stale`` once its run is dead)."""
    check_suite(suite)
    require_host(START_TOOLS)
    if name is not None:
        check_name(name)
    reap_stale()
    image = Path(image) if image else ensure_image(suite)
    if not (image / "usr/lib/systemd/systemd").exists() and not (image / "lib/systemd/systemd").exists():
        raise TestHostError(f"{image} is not a bootable image (no systemd in it)")
    key = ensure_ssh_key()
    host = _allocate(suite, name, image, key, persistent)
    _install_signal_handlers()
    try:
        _launch(host)
    except BaseException:
        host.stop()
        raise
    return host


def check_name(name: str) -> None:
    """A host's name is its container's host name too."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name):
        raise TestHostError(f"bad name {name!r}: use letters, digits and '-' (at most 63)")


# ---------------------------------------------------------------------------------------------
# In-process hosts (and clusters), stopped at exit or on SIGTERM/SIGINT even when a test dies.
_LIVE: dict[str, TestHost | Cluster] = {}
_PREVIOUS_HANDLERS: dict[int, object] = {}


def _stop_all() -> None:
    for host in list(_LIVE.values()):
        try:
            host.stop()
        except Exception as exc:  # keep stopping the others
            log.warning("stopping %s: %s", host.name, exc)


atexit.register(_stop_all)


def _on_signal(signum, frame) -> None:
    _stop_all()
    previous = _PREVIOUS_HANDLERS.get(signum)
    if callable(previous):
        previous(signum, frame)  # e.g. Python's SIGINT handler, raising KeyboardInterrupt
    else:  # the default action: die of the signal
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    if _PREVIOUS_HANDLERS or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(signum)
        if previous != signal.SIG_IGN:  # e.g. SIGINT of a background job, SIGHUP under nohup
            _PREVIOUS_HANDLERS[signum] = previous
            signal.signal(signum, _on_signal)


def _host_json(host: TestHost) -> dict:
    out = {f.name: getattr(host, f.name) for f in dataclasses.fields(host) if not f.name.startswith("_")}
    out = {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
    out["ssh"] = shlex.join(host.ssh_argv())
    out["runtime_dir"] = host._state.get("runtime_dir")
    return out


# ---------------------------------------------------------------------------------------------
# Starting a host


def _allocate(suite: str, name: str | None, image: Path, key: Path, persistent: bool = False) -> TestHost:
    """Claim a free slot (lock held for the host's life) and record the host before creating anything."""
    with flock(STATE_LOCK):  # so that reap_stale never sees half of a new host
        return _allocate_locked(suite, name, image, key, persistent)


def _allocate_locked(suite: str, name: str | None, image: Path, key: Path, persistent: bool = False) -> TestHost:
    if name is not None and state_path(name).exists():
        raise TestHostError(f"a test host named {name} already exists (see: python -m tests.testhost list)")
    slot, fd = claim_slot(lambda slot: [name or network.names(slot)[0]])
    netns, link, _ = network.names(slot)
    hostname = name or netns
    host = new_host(hostname, suite, slot, network.addresses(slot)[1], netns, link, image, key, persistent,
                    RUN_DIR / hostname)
    host._lock_fd = fd
    return host


def claim_slot(names_of) -> tuple[int, int]:
    """A slot no one uses, whose NAMES_OF(slot) no record has yet; with its lock (an fd to keep)."""
    claimed = {s.get("slot") for s in load_states()}
    shown = network.host_addresses()
    for slot in network.SLOTS:
        if slot in claimed or network.in_use(slot, shown) or any(state_path(n).exists() for n in names_of(slot)):
            continue
        fd = network.claim(slot)
        if fd is not None:
            return slot, fd
    raise TestHostError(f"no free slot in {network.NET_PREFIX}.1-254.0/24")


def new_host(name: str, suite: str, slot: int, address: str, netns: str, link: str, image: Path, key: Path,
             persistent: bool, helpers_dir: Path, member_of: str | None = None) -> TestHost:
    """Record host NAME (nothing made yet) and return it; its pebble's files are in HELPERS_DIR."""
    gateway = network.addresses(slot)[0]
    host = TestHost(
        name=name, suite=suite, slot=slot, address=address, gateway=gateway, ssh_key=key,
        proxy_url="", acme_directory=f"https://{gateway}:{PEBBLE_PORT}/dir",
        acme_ca_bundle=helpers_dir / "pebble-ca.pem", acme_root=helpers_dir / "acme-root.pem",
        persistent=persistent)
    host._state = {
        "name": name, "slot": slot, "suite": suite, "image": str(image), "netns": netns,
        "link": link, "runtime_dir": str(RUN_DIR / name), "status": "starting", "created": time.time(),
        # A persistent host's own disk, recorded before it exists so that teardown and the reaper find it.
        "copy": str(HOSTS_DIR / name) if persistent else None,
        "owner": record(os.getpid()), "detached": False, "procs": {}, "leader": None, "timings": {},
        "member_of": member_of,  # the cluster whose bridge it is on
    }
    write_state(host._state)
    _LIVE[name] = host
    return host


def _launch(host: TestHost) -> None:
    t0 = time.monotonic()
    network.create(host.slot)
    power_on(host, t0)  # the container first: it takes longest (copy of the image, then boot)
    # Its proxy and pebble, while the container boots.
    start_helpers(host, host.address)
    host._state["timings"]["services"] = round(time.monotonic() - t0, 2)
    wait_ready(host, t0)


def power_on(host: TestHost, t0: float) -> None:
    """Boot HOST's container (a persistent host's own copy of the image made first); its network exists."""
    st = host._state
    Path(st["runtime_dir"]).mkdir(parents=True, exist_ok=True)
    if st.get("copy"):
        copy = Path(st["copy"])
        HOSTS_DIR.mkdir(parents=True, exist_ok=True)
        remove_copy(copy)  # a leftover of a host of the same name that no state claims any more
        run(["cp", "-a", "--reflink=auto", "--", st["image"], str(copy)], what=f"copying the image to {copy}",
             timeout=COPY_TIMEOUT)
        st["timings"]["copy"] = round(time.monotonic() - t0, 2)
    _boot(host)


def wait_ready(host: TestHost, t0: float) -> None:
    """Wait until root logs in over SSH and the boot has finished; record HOST as running."""
    st = host._state
    _wait_ssh(host)
    st["timings"]["ssh"] = round(time.monotonic() - t0, 2)
    kids = children(st["procs"]["nspawn"]["pid"])
    st["leader"] = record(kids[0]) if kids else None
    _wait_booted(host)
    st["timings"]["ready"] = round(time.monotonic() - t0, 2)

    st["status"] = "running"
    st["host"] = _host_json(host)
    write_state(st)
    log.info("%s ready at %s in %.1f s", host.name, host.address, st["timings"]["ready"])


def _boot(host: TestHost) -> None:
    """Start the container: on an ephemeral copy of the image (``-x``), or on the host's own copy."""
    st = host._state
    root = ["-D", st["copy"]] if st.get("copy") else ["-D", st["image"], "-x"]
    argv = ["systemd-nspawn", *root, "-b", "-M", host.name, "--register=no", "--keep-unit",
            f"--network-namespace-path={network.NETNS_DIR / st['netns']}", "--capability=CAP_NET_ADMIN"]
    popen = spawn(argv, Path(st["runtime_dir"]) / "nspawn.log", {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"})
    host._procs["nspawn"] = popen
    st["procs"]["nspawn"] = record(popen.pid, argv)
    st["powered_on"] = time.monotonic()
    write_state(st)


# ---------------------------------------------------------------------------------------------
# Waiting for the container


def _wait_ssh(host: TestHost, timeout: float = SSH_READY_TIMEOUT) -> None:
    def logged_in() -> bool | str:
        with socket.create_connection((host.address, 22), timeout=1):
            pass
        done = host.ssh("true", timeout=20)
        return done.returncode == 0 or done.stderr.strip()

    poll(host, "nspawn", f"SSH as root at {host.address}", timeout, logged_in, (OSError, subprocess.TimeoutExpired))


def _wait_ssh_banner(host: TestHost, timeout: float = SSH_READY_TIMEOUT) -> None:
    """Wait until sshd answers with its banner (whoever may log in)."""
    def banner() -> bool | None:
        with socket.create_connection((host.address, 22), timeout=1) as sock:
            sock.settimeout(5)
            return True if sock.recv(64).startswith(b"SSH-") else None

    poll(host, "nspawn", f"SSH answering at {host.address}", timeout, banner)


def _wait_booted(host: TestHost, timeout: float = BOOT_FINISHED_TIMEOUT) -> None:
    try:
        done = host.ssh("systemctl is-system-running --wait", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise timeout_error(host, "nspawn", "boot finished (systemctl is-system-running --wait)",
                             timeout) from None
    status = done.stdout.strip()
    if status == "degraded":
        failed = host.ssh("systemctl --failed --no-legend --plain").stdout.strip()
        log.warning("%s booted degraded; failed units:\n%s", host.name, failed)
    elif status != "running":
        raise timeout_error(host, "nspawn", f"a running system (systemctl says {status!r}: "
                             f"{done.stderr.strip()})", timeout)


# ---------------------------------------------------------------------------------------------
# Hosts started by another process (`up`)


def find(name: str) -> TestHost:
    """A running host started elsewhere (e.g. by `up`), by name; for reading its addresses and files."""
    for state in load_states():
        if state["name"] == name and state.get("host"):
            fields = {f.name for f in dataclasses.fields(TestHost) if not f.name.startswith("_")}
            values = {k: v for k, v in state["host"].items() if k in fields}
            for k in ("ssh_key", "acme_ca_bundle", "acme_root"):
                values[k] = Path(values[k])
            host = TestHost(**values)
            host._done = True  # not ours to stop: `down` does that
            return host
    raise TestHostError(f"no test host named {name} (see: python -m tests.testhost list)")


def reboot_detached(name: str, timeout: float = REBOOT_TIMEOUT) -> float:
    """Reboot a persistent host started by `up` (its container owns it); return the seconds it took."""
    require_host(("ip",))
    with flock(STATE_LOCK):  # its owner, the nspawn, is gone for a moment: no reaper may see that
        states = [s for s in load_states() if s["name"] == name]
        if not states:
            raise TestHostError(f"no test host named {name} (see: python -m tests.testhost list)")
        state = states[0]
        if not state.get("detached"):
            raise TestHostError(f"{name} belongs to process {state['owner']['pid']}: reboot it from there")
        host = find(name)
        host._state, host._done = state, False
        try:
            return host.reboot(timeout)
        finally:
            host._done = True
            if alive(state["procs"]["nspawn"]):
                state["owner"] = state["procs"]["nspawn"]
            write_state(state)
            host._procs.clear()


def down(name: str | None = None) -> list[str]:
    """Tear down host or cluster NAME (or every recorded one and any orphans if None), whoever started it;
    return the names of the hosts and clusters torn down."""
    require_host(("ip",))
    with flock(STATE_LOCK):
        states = load_states()
        if name is not None:
            states = [s for s in states if s["name"] == name]
            if not states:
                raise TestHostError(f"no test host named {name} (see: python -m tests.testhost list)")
        stopped = []
        for state in states:
            stopped += [state["name"], *(m for m in state.get("members", ()) if state_path(m).exists())]
            if state["name"] in _LIVE:
                _LIVE[state["name"]].stop()
            else:
                teardown(state)
        if name is None:
            reap_orphans(load_states())
    return list(dict.fromkeys(stopped))
