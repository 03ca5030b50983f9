"""Throwaway Debian servers on this machine, for integration tests.

A test host is a debootstrapped Debian image booted with ``systemd-nspawn -x`` (an ephemeral copy,
so the cached image is never changed), or, with ``persistent=True``, booted on its own copy of the image
that keeps its disk across ``reboot()`` (removed at teardown), inside its own network namespace, joined to the host by a veth
pair on its own /24 (10.213.N.0/24: host end .1, container .2).  The container has no route out:
next to it the host runs, on 10.213.N.1, a private tinyproxy (its way to apt and PyPI) and a pebble
ACME server with pebble-challtestsrv answering every DNS name with the container's address.

    with testhost.start() as host:
        host.ssh("systemctl is-system-running")

From a shell (as root): ``python -m tests.testhost up [--persistent]|reboot NAME|down NAME|--all|list|image``.

Everything a host holds is recorded in /run/gangway-testhost/NAME.json, so that a later run can tear
down what a dead one left behind (``reap_stale``).  Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("gangway.testhost")

SUITES = ("trixie", "bookworm")  # the first is the default
DEFAULT_SUITE = SUITES[0]

# Paths.  The cache survives reboots (images, the harness SSH key); the runtime dir does not, and
# neither do the network namespaces and processes it describes.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gangway" / "testhost"
IMAGES_DIR = CACHE_DIR / "images"
# Disks of persistent hosts: next to the images (same file system, so a reflink copy where it can), not in
# the runtime dir, which is often a small tmpfs and a provisioned server is over a gigabyte.
HOSTS_DIR = CACHE_DIR / "hosts"
SSH_KEY = CACHE_DIR / "id_ed25519"
RUN_DIR = Path("/run/gangway-testhost")
STATE_LOCK = RUN_DIR / "state.lock"  # held while hosts are recorded, reaped or taken down
NETNS_DIR = Path("/run/netns")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
APT_DIR = Path("/etc/apt")

# Naming and addressing: slot N owns 10.213.N.0/24, netns gw-tN, veth gw-hN (host) / gw-cN (container).
NET_PREFIX = "10.213"
SLOTS = range(1, 255)
PROXY_PORTS = range(8888, 8900)  # 8888 unless something already holds it on our address
PEBBLE_PORT, PEBBLE_MGMT_PORT, CHALL_DNS_PORT, CHALL_MGMT_PORT = 14000, 15000, 8053, 8055

IMAGE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "ca-certificates", "iproute2", "sudo")
IMAGE_RECIPE = 2  # bump when the image preparation changes, so cached images are rebuilt
IMAGE_STAMP = "etc/gangway-testhost-image.json"  # inside the image
IMAGE_HOSTNAME = "gangway-test"
PASSWORD_USER = "tester"
PASSWORD = "tester-password"

# Bounded waits, in seconds.
DEBOOTSTRAP_TIMEOUT = 1200
SSH_READY_TIMEOUT = 120
BOOT_FINISHED_TIMEOUT = 120
SERVICE_READY_TIMEOUT = 30
NSPAWN_STOP_TIMEOUT = 30
COPY_TIMEOUT = 300
REBOOT_TIMEOUT = 120
PROCESS_STOP_TIMEOUT = 5

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

# Debian release names, to tell the Debian archive apart from third-party repositories in apt sources.
DEBIAN_SUITES = {
    "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
}


class TestHostError(RuntimeError):
    """The harness could not do what was asked; the message says why."""


class HostSetupError(TestHostError):
    """This machine cannot run test hosts (not root, a package missing)."""


# ---------------------------------------------------------------------------------------------
# The test host


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
        if not _alive(nspawn):
            raise TestHostError(f"{self.name}: its container is not running; " +
                                _tail(Path(st["runtime_dir"]) / "nspawn.log"))
        if not _terminate(nspawn, self._procs.get("nspawn"), NSPAWN_STOP_TIMEOUT):
            raise TestHostError(f"{self.name}: the container did not power off within {NSPAWN_STOP_TIMEOUT} s "
                                "(killed); " + _tail(Path(st["runtime_dir"]) / "nspawn.log"))
        if _alive(st.get("leader")):  # nspawn waits for its container: this is only a safety net
            _signal(st["leader"], signal.SIGKILL)
            _wait_gone(st["leader"], None, 5)
        st["leader"] = None
        off = time.monotonic()
        _boot(self)
        try:
            _wait_ssh_banner(self, timeout)
        except BaseException:
            _write_state(st)
            raise
        kids = _children(st["procs"]["nspawn"]["pid"])
        st["leader"] = _record(kids[0]) if kids else None
        done = time.monotonic()
        st.setdefault("reboots", []).append({"off": round(off - t0, 2), "on_to_ssh": round(done - off, 2)})
        _write_state(st)
        log.info("%s rebooted: off in %.1f s, SSH after %.1f s more", self.name, off - t0, done - off)
        return round(done - t0, 2)

    def stop(self) -> None:
        """Tear down the container, its services and network.  Safe to call more than once."""
        if self._done:
            return
        _LIVE.pop(self.name, None)
        t0 = time.monotonic()
        try:
            _teardown(self._state, self._procs)
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
        _write_state(self._state)
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
    _check_suite(suite)
    require_host(START_TOOLS)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name):
        raise TestHostError(f"bad name {name!r}: use letters, digits and '-' (at most 63)")
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


# In-process hosts, stopped at exit or on SIGTERM/SIGINT even when a test dies.
_LIVE: dict[str, TestHost] = {}
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


def write_inventory(host: TestHost, path: Path, app: str = "mysite", domains=(), **app_keys) -> Path:
    """Write a gangway inventory (YAML) for HOST at PATH: root with the harness key, pebble as the
    ACME directory (trusting its CA bundle), and the host's tinyproxy as the outbound proxy.
    APP_KEYS (source, health_check, keep_releases, ...) are added to its app section.
    Host keys go to a fresh PATH.known_hosts next to it (known_hosts_path), never to ~/.ssh/known_hosts:
    test hosts reuse addresses with new keys."""
    q = json.dumps  # a JSON string is a valid YAML scalar
    email = f"admin@{domains[0] if domains else 'app.test'}"
    extra = "".join(f"  {key}: {q(str(value) if isinstance(value, Path) else value)}\n"
                    for key, value in app_keys.items())
    known_hosts = known_hosts_path(path)
    known_hosts.unlink(missing_ok=True)  # keys of an earlier host at this address
    Path(path).write_text(
        f"app:\n  name: {q(app)}\n  domains: [{', '.join(q(d) for d in domains)}]\n{extra}"
        f"hosts:\n  - address: {q(host.address)}\n    user: root\n    key: {q(str(host.ssh_key))}\n"
        f"known_hosts: {q(known_hosts.name)}\n"
        f"acme:\n  email: {q(email)}\n  directory: {q(host.acme_directory)}\n"
        f"  ca_bundle: {q(str(host.acme_ca_bundle))}\n"
        f"proxy:\n  url: {q(host.proxy_url)}\n  no_proxy: [{q(host.gateway)}]\n")
    return Path(path)


def known_hosts_path(inventory: Path) -> Path:
    """The host keys file write_inventory names for the inventory at INVENTORY: NAME.known_hosts beside it."""
    return Path(inventory).with_suffix(".known_hosts")


# ---------------------------------------------------------------------------------------------
# Host checks


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


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise TestHostError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")


def _run(argv: list[str], what: str | None = None, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
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
def _flock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join("  " + line for line in text)


# ---------------------------------------------------------------------------------------------
# apt sources of the host: where the Debian archive is


def apt_source_entries(apt_dir: Path = APT_DIR) -> list[dict]:
    """Every enabled ``deb`` source of apt: [{"uri", "suite", "signed_by"}] in file order."""
    files = [apt_dir / "sources.list"]
    listdir = apt_dir / "sources.list.d"
    if listdir.is_dir():
        files += sorted(p for p in listdir.iterdir() if p.suffix in (".list", ".sources"))
    entries = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries += parse_deb822_sources(text) if path.suffix == ".sources" else parse_one_line_sources(text)
    return entries


def parse_one_line_sources(text: str) -> list[dict]:
    """``deb [opt=val ...] URI SUITE [COMPONENT ...]`` lines."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        options = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line)
        if m:
            kind, opts, rest = m.groups()
            for opt in opts.split():
                key, _, value = opt.partition("=")
                options[key.lower()] = value
            words = [kind, *rest.split()]
        else:
            words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append({"uri": words[1], "suite": words[2], "signed_by": options.get("signed-by", "")})
    return entries


def parse_deb822_sources(text: str) -> list[dict]:
    """deb822 stanzas (``Types: deb`` / ``URIs:`` / ``Suites:``), the format of ``*.sources``."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append({"uri": uri, "suite": suite, "signed_by": fields.get("signed-by", "")})
    return entries


def _suite_base(suite: str) -> str:
    return re.sub(r"(-updates|-backports(-sloppy)?|-security|-proposed-updates|/updates)$", "", suite)


def _is_security(suite: str) -> bool:
    return suite.endswith("-security") or suite.endswith("/updates")


def debian_mirrors(entries: list[dict] | None = None) -> tuple[str, str]:
    """(archive URI, security archive URI) from the host's apt sources; never a hard-coded host."""
    entries = apt_source_entries() if entries is None else entries
    debian = [e for e in entries
              if urlsplit(e["uri"]).scheme in ("http", "https", "ftp", "file")
              and _suite_base(e["suite"]) in DEBIAN_SUITES]
    archives = [e for e in debian if not _is_security(e["suite"])]
    if not archives:
        raise TestHostError(f"no Debian archive in the host's apt sources ({APT_DIR}/sources.list, "
                            f"{APT_DIR}/sources.list.d/*.list|*.sources)")
    # Prefer an entry that is plainly the Debian archive, not some other Debian-based repository.
    archives.sort(key=lambda e: not (e["uri"].rstrip("/").endswith("/debian")
                                     or "debian-archive-keyring" in e["signed_by"]))
    archive = archives[0]["uri"].rstrip("/")
    security = [e["uri"].rstrip("/") for e in debian if _is_security(e["suite"])]
    if security:
        return archive, security[0]
    parts = urlsplit(archive)
    path = parts.path[: -len("/debian")] if parts.path.endswith("/debian") else ""
    return archive, urlunsplit(parts._replace(path=path + "/debian-security"))


# ---------------------------------------------------------------------------------------------
# The cached image and the harness key


def ensure_ssh_key() -> Path:
    """The harness's ed25519 key (private key path), made once under the cache dir."""
    with _flock(CACHE_DIR / "key.lock"):
        pub = SSH_KEY.with_name(SSH_KEY.name + ".pub")
        if SSH_KEY.exists() and pub.exists():
            return SSH_KEY
        require_host(("ssh-keygen",))
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
            new = Path(tmp) / "key"
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gangway-testhost", "-f", str(new)])
            os.replace(new.with_name("key.pub"), pub)
            os.replace(new, SSH_KEY)
    return SSH_KEY


def _image_stamp(suite: str, mirror: str, security: str, pubkey: str) -> dict:
    cas = hashlib.sha256()
    for crt in sorted(HOST_CA_DIR.glob("**/*.crt")):
        cas.update(crt.name.encode() + b"\0" + crt.read_bytes())
    return {"recipe": IMAGE_RECIPE, "suite": suite, "mirror": mirror, "security": security,
            "packages": list(IMAGE_PACKAGES), "ssh_key": pubkey.strip(), "host_cas": cas.hexdigest()}


def ensure_image(suite: str = DEFAULT_SUITE) -> Path:
    """Build (once) and return the cached base image dir of SUITE.  Never boot it directly."""
    _check_suite(suite)
    require_host(IMAGE_TOOLS)
    key = ensure_ssh_key()
    mirror, security = debian_mirrors()
    wanted = _image_stamp(suite, mirror, security, key.with_name(key.name + ".pub").read_text())
    target = IMAGES_DIR / suite
    with _flock(IMAGES_DIR / f"{suite}.lock"):
        try:
            have = json.loads((target / IMAGE_STAMP).read_text())
            have.pop("built", None)
        except (OSError, ValueError):
            have = None
        if have == wanted:
            return target
        if have is not None:
            changed = sorted(k for k in wanted if have.get(k) != wanted[k])
            log.info("rebuilding the %s image (changed: %s)", suite, ", ".join(changed))
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{suite}-", dir=IMAGES_DIR))
        try:
            tmp.chmod(0o755)  # it becomes the target's "/"; mkdtemp made it 0700
            _debootstrap(suite, tmp, mirror)
            _prepare_image(tmp, suite, mirror, security, wanted["ssh_key"])
            (tmp / IMAGE_STAMP).write_text(json.dumps({**wanted, "built": time.time()}, indent=1) + "\n")
            old = None
            if target.exists():
                old = IMAGES_DIR / f".old-{suite}-{secrets.token_hex(4)}"
                os.rename(target, old)
            os.rename(tmp, target)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built the %s image in %.0f s: %s", suite, time.monotonic() - t0, target)
    return target


def _debootstrap(suite: str, root: Path, mirror: str) -> None:
    logfile = IMAGES_DIR / f"{suite}.build.log"
    log.info("debootstrap %s from %s (about a minute)", suite, mirror)
    argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(IMAGE_PACKAGES),
            suite, str(root), mirror]
    with open(logfile, "w") as out:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=DEBOOTSTRAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TestHostError(f"debootstrap {suite} took over {DEBOOTSTRAP_TIMEOUT} s; "
                                + _tail(logfile)) from None
    if done.returncode != 0:
        inner = root / "debootstrap/debootstrap.log"
        raise TestHostError(f"debootstrap {suite} failed ({done.returncode}); "
                            + _tail(logfile) + ("\n" + _tail(inner) if inner.exists() else ""))


def _chroot(root: Path, *argv: str, input: str | None = None) -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    _run(["chroot", str(root), *argv], what=f"in the image: {shlex.join(argv)}", input=input, env=env,
         timeout=300)


def _prepare_image(root: Path, suite: str, mirror: str, security: str, pubkey: str) -> None:
    """Make a fresh debootstrap a test server: CAs, apt sources, keys, a password user, SSH."""
    # This network re-signs outbound TLS: the target must trust the same extra CAs as the host.
    cadir = root / "usr/local/share/ca-certificates"
    cadir.mkdir(parents=True, exist_ok=True)
    for crt in sorted(HOST_CA_DIR.glob("**/*.crt")):
        dst = cadir / crt.relative_to(HOST_CA_DIR)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(crt, dst)
    _chroot(root, "update-ca-certificates")

    # apt: the same archive as the host's, plus updates and security.  No proxy here: giving the
    # target its proxy is the product's job.
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    signed = f"Signed-By: {keyring}\n" if (root / keyring.lstrip("/")).exists() else ""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n{signed}\n"
        f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n{signed}")

    # root logs in with the harness key; tester with a password (until the product hardens sshd).
    dotssh = root / "root/.ssh"
    dotssh.mkdir(mode=0o700, exist_ok=True)
    (dotssh / "authorized_keys").write_text(pubkey.strip() + "\n")
    (dotssh / "authorized_keys").chmod(0o600)
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", PASSWORD_USER)
    _chroot(root, "chpasswd", input=f"{PASSWORD_USER}:{PASSWORD}\n")

    # sshd enabled at boot (openssh-server's postinst does it; make sure).
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    if not (wants / "ssh.service").is_symlink():
        unit = "/usr/lib/systemd/system/ssh.service"
        if not (root / unit.lstrip("/")).exists():
            unit = "/lib/systemd/system/ssh.service"
        (wants / "ssh.service").symlink_to(unit)

    # Identity: each boot gets its own machine id; a fixed hostname that resolves locally.
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text(IMAGE_HOSTNAME + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{IMAGE_HOSTNAME}\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    # No DNS server is reachable from the target; names are resolved by the proxy.
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# gangway test host: no resolver; outbound traffic goes through the HTTP proxy\n")
    # No package lists, as on a fresh cloud image: they would be stale and are 55 MB more to copy
    # at every boot; whoever installs packages runs apt-get update first.
    _chroot(root, "apt-get", "clean")
    for entry in (root / "var/lib/apt/lists").iterdir():
        if entry.is_file() and entry.name != "lock":
            entry.unlink()


# ---------------------------------------------------------------------------------------------
# Processes we start: identity checks before we signal anything


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of PID, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _proc_argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def _record(pid: int, argv: list[str] | None = None) -> dict:
    stat = _proc_stat(pid)
    return {"pid": pid, "start": stat[2] if stat else None, "argv": argv}


def _alive(rec: dict | None) -> bool:
    """Is the process of REC still the one we recorded (same start time and command line)?"""
    if not rec or not rec.get("pid"):
        return False
    stat = _proc_stat(rec["pid"])
    if stat is None or stat[0] in "ZX" or stat[2] != rec.get("start"):
        return False
    return rec.get("argv") is None or _proc_argv(rec["pid"]) == rec["argv"]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pid:
                kids.append(int(entry.name))
    return kids


def _wait_gone(rec: dict, popen: subprocess.Popen | None, timeout: float) -> bool:
    if popen is not None:
        try:
            popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while _alive(rec):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _signal(rec: dict, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec["pid"], signum)


def _terminate(rec: dict, popen: subprocess.Popen | None, timeout: float = PROCESS_STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after TIMEOUT; True if it went on SIGTERM."""
    if not _alive(rec):
        if popen is not None:
            popen.poll()
        return True
    _signal(rec, signal.SIGTERM)
    if _wait_gone(rec, popen, timeout):
        return True
    if _alive(rec):
        _signal(rec, signal.SIGKILL)
    _wait_gone(rec, popen, 5)
    return False


def _spawn(argv: list[str], logfile: Path, env: dict | None = None) -> subprocess.Popen:
    with open(logfile, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------------------------------------
# State files


def _state_path(name: str) -> Path:
    return RUN_DIR / f"{name}.json"


def _write_state(state: dict) -> None:
    path = _state_path(state["name"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


def _load_states() -> list[dict]:
    states = []
    for path in sorted(RUN_DIR.glob("*.json")):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return states


def _host_json(host: TestHost) -> dict:
    out = {f.name: getattr(host, f.name) for f in dataclasses.fields(host) if not f.name.startswith("_")}
    out = {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
    out["ssh"] = shlex.join(host.ssh_argv())
    out["runtime_dir"] = host._state.get("runtime_dir")
    return out


# ---------------------------------------------------------------------------------------------
# Starting a host


def _host_addresses() -> str:
    return _run(["ip", "-o", "addr", "show"]).stdout


def _allocate(suite: str, name: str | None, image: Path, key: Path, persistent: bool = False) -> TestHost:
    """Claim a free slot (lock held for the host's life) and record the host before creating anything."""
    with _flock(STATE_LOCK):  # so that reap_stale never sees half of a new host
        return _allocate_locked(suite, name, image, key, persistent)


def _allocate_locked(suite: str, name: str | None, image: Path, key: Path, persistent: bool = False) -> TestHost:
    if name is not None and _state_path(name).exists():
        raise TestHostError(f"a test host named {name} already exists (see: python -m tests.testhost list)")
    claimed = {s.get("slot") for s in _load_states()}
    addresses = _host_addresses()
    for slot in SLOTS:
        netns, link = f"gw-t{slot}", f"gw-h{slot}"
        hostname = name or netns
        if (slot in claimed or (NETNS_DIR / netns).exists() or Path(f"/sys/class/net/{link}").exists()
                or f" {NET_PREFIX}.{slot}." in addresses or _state_path(hostname).exists()):
            continue
        fd = os.open(RUN_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by a live host whose netns is already gone (being stopped)
            os.close(fd)
            continue
        break
    else:
        raise TestHostError(f"no free slot in {NET_PREFIX}.1-254.0/24")

    gateway, address = f"{NET_PREFIX}.{slot}.1", f"{NET_PREFIX}.{slot}.2"
    rundir = RUN_DIR / hostname
    host = TestHost(
        name=hostname, suite=suite, slot=slot, address=address, gateway=gateway, ssh_key=key,
        proxy_url="", acme_directory=f"https://{gateway}:{PEBBLE_PORT}/dir",
        acme_ca_bundle=rundir / "pebble-ca.pem", acme_root=rundir / "acme-root.pem", persistent=persistent,
        _lock_fd=fd)
    host._state = {
        "name": hostname, "slot": slot, "suite": suite, "image": str(image), "netns": netns,
        "link": link, "runtime_dir": str(rundir), "status": "starting", "created": time.time(),
        # A persistent host's own disk, recorded before it exists so that teardown and the reaper find it.
        "copy": str(HOSTS_DIR / hostname) if persistent else None,
        "owner": _record(os.getpid()), "detached": False, "procs": {}, "leader": None, "timings": {},
    }
    _write_state(host._state)
    _LIVE[hostname] = host
    return host


def _launch(host: TestHost) -> None:
    st, t0 = host._state, time.monotonic()
    rundir = Path(st["runtime_dir"])
    rundir.mkdir(parents=True, exist_ok=True)
    slot, gw, addr = host.slot, host.gateway, host.address
    netns, link, peer = st["netns"], st["link"], f"gw-c{slot}"

    # Network: the namespace and the veth pair.
    _run(["ip", "netns", "add", netns])
    _run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer])
    _run(["ip", "link", "set", peer, "netns", netns])
    _run(["ip", "addr", "add", f"{gw}/24", "dev", link])
    _run(["ip", "link", "set", link, "up"])
    _run(["ip", "-n", netns, "addr", "add", f"{addr}/24", "dev", peer])
    _run(["ip", "-n", netns, "link", "set", peer, "up"])
    _run(["ip", "-n", netns, "link", "set", "lo", "up"])
    # No default route in the container, on purpose: everything it reaches outside its /24 goes
    # through the proxy, and anything trying to go direct fails at once instead of hanging.

    def spawn(role: str, argv: list[str], env: dict | None = None) -> None:
        popen = _spawn(argv, rundir / f"{role}.log", env)
        host._procs[role] = popen
        st["procs"][role] = _record(popen.pid, argv)
        _write_state(st)

    # The container first: it takes longest (copy of the image, then boot).
    if st.get("copy"):
        copy = Path(st["copy"])
        HOSTS_DIR.mkdir(parents=True, exist_ok=True)
        _remove_copy(copy)  # a leftover of a host of the same name that no state claims any more
        _run(["cp", "-a", "--reflink=auto", "--", st["image"], str(copy)], what=f"copying the image to {copy}",
             timeout=COPY_TIMEOUT)
        st["timings"]["copy"] = round(time.monotonic() - t0, 2)
    _boot(host)

    # tinyproxy: the target's only way out.
    port = _free_port(gw, PROXY_PORTS)
    host.proxy_url = f"http://{gw}:{port}"
    (rundir / "tinyproxy.conf").write_text(
        f"User nobody\nGroup nogroup\nPort {port}\nListen {gw}\nTimeout 600\nMaxClients 100\n"
        f"Allow {gw.rsplit('.', 1)[0]}.0/24\nConnectPort 443\nConnectPort 80\nLogLevel Notice\n")
    spawn("tinyproxy", ["tinyproxy", "-d", "-c", str(rundir / "tinyproxy.conf")])

    # pebble, with challtestsrv as its DNS: every name resolves to the target.
    _pebble_tls(rundir, gw)
    (rundir / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{gw}:{PEBBLE_PORT}", "managementListenAddress": f"{gw}:{PEBBLE_MGMT_PORT}",
        "certificate": str(rundir / "pebble-cert.pem"), "privateKey": str(rundir / "pebble-key.pem"),
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}, indent=1))
    spawn("challtestsrv", ["pebble-challtestsrv", "-defaultIPv4", addr, "-defaultIPv6", "",
                           "-dns01", f"{gw}:{CHALL_DNS_PORT}", "-http01", "", "-https01", "",
                           "-tlsalpn01", "", "-management", f"{gw}:{CHALL_MGMT_PORT}"])
    spawn("pebble", ["pebble", "-config", str(rundir / "pebble.json"), "-dnsserver", f"{gw}:{CHALL_DNS_PORT}"],
          {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})

    # Services up, while the container boots.
    _wait_port(host, "tinyproxy", gw, port)
    _wait_port(host, "challtestsrv", gw, CHALL_MGMT_PORT)
    _fetch_acme_roots(host)
    st["timings"]["services"] = round(time.monotonic() - t0, 2)

    _wait_ssh(host)
    st["timings"]["ssh"] = round(time.monotonic() - t0, 2)
    kids = _children(st["procs"]["nspawn"]["pid"])
    st["leader"] = _record(kids[0]) if kids else None
    _wait_booted(host)
    st["timings"]["ready"] = round(time.monotonic() - t0, 2)

    st["status"] = "running"
    st["host"] = _host_json(host)
    _write_state(st)
    log.info("%s ready at %s in %.1f s", host.name, addr, st["timings"]["ready"])


def _boot(host: TestHost) -> None:
    """Start the container: on an ephemeral copy of the image (``-x``), or on the host's own copy."""
    st = host._state
    root = ["-D", st["copy"]] if st.get("copy") else ["-D", st["image"], "-x"]
    argv = ["systemd-nspawn", *root, "-b", "-M", host.name, "--register=no", "--keep-unit",
            f"--network-namespace-path={NETNS_DIR / st['netns']}", "--capability=CAP_NET_ADMIN"]
    popen = _spawn(argv, Path(st["runtime_dir"]) / "nspawn.log", {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"})
    host._procs["nspawn"] = popen
    st["procs"]["nspawn"] = _record(popen.pid, argv)
    st["powered_on"] = time.monotonic()
    _write_state(st)


def _free_port(ip: str, ports) -> int:
    """The first port of PORTS we can bind on IP (a wildcard listener elsewhere would block it)."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
                return port
            except OSError:
                continue
    raise TestHostError(f"no free port for the proxy on {ip} in {ports.start}-{ports.stop - 1}")


def _pebble_tls(rundir: Path, ip: str) -> None:
    """A small CA (what ACME clients trust: acme_ca_bundle) and pebble's listener cert for IP."""
    ca_key, ca, key, csr, cert = (rundir / n for n in ("pebble-ca.key", "pebble-ca.pem", "pebble-key.pem",
                                                       "pebble.csr", "pebble-cert.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-days", "30", "-subj", "/CN=gangway testhost pebble CA",
          "-keyout", str(ca_key), "-out", str(ca),
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run(["openssl", "req", *ec, "-subj", f"/CN={ip}", "-keyout", str(key), "-out", str(csr)])
    ext = rundir / "pebble-cert.ext"
    ext.write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(cert)])


def _check_running(host: TestHost, role: str) -> None:
    popen = host._procs.get(role)
    if popen is not None and popen.poll() is not None:
        logfile = Path(host._state["runtime_dir"]) / f"{role}.log"
        raise TestHostError(f"{host.name}: {role} exited ({popen.returncode}); " + _tail(logfile))


def _timeout_error(host: TestHost, role: str, what: str, timeout: float) -> TestHostError:
    logfile = Path(host._state["runtime_dir"]) / f"{role}.log"
    return TestHostError(f"{host.name}: {what} not within {timeout} s; " + _tail(logfile))


def _poll(host: TestHost, role: str, what: str, timeout: float, ready, errors=(OSError,),
          interval: float = 0.2) -> None:
    """Call READY until it returns True, failing at once if ROLE's process has exited. Not ready yet, it
    returns a reason (or None: no news) or raises one of ERRORS; past TIMEOUT seconds, a TestHostError says
    that WHAT did not happen, with the last reason."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        _check_running(host, role)
        try:
            answer = ready()
            if answer is True:
                return
            if answer is not None:
                last = answer
        except errors as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise _timeout_error(host, role, f"{what} ({last})" if last else what, timeout)
        time.sleep(interval)


def _wait_port(host: TestHost, role: str, ip: str, port: int, timeout: float = SERVICE_READY_TIMEOUT) -> None:
    def listening() -> bool:
        with socket.create_connection((ip, port), timeout=1):
            return True

    _poll(host, role, f"{role} listening on {ip}:{port}", timeout, listening, interval=0.1)


def _fetch_acme_roots(host: TestHost, timeout: float = SERVICE_READY_TIMEOUT) -> None:
    """Wait for pebble's directory, then save its (per-start) root and intermediate."""
    context = ssl.create_default_context(cafile=str(host.acme_ca_bundle))
    mgmt = f"https://{host.gateway}:{PEBBLE_MGMT_PORT}"

    def get(url: str) -> bytes:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read()

    def answering() -> bool | None:
        return True if "newAccount" in json.loads(get(host.acme_directory)) else None

    _poll(host, "pebble", f"pebble answering at {host.acme_directory}", timeout, answering, (OSError, ValueError))
    pems = [get(f"{mgmt}/roots/0"), get(f"{mgmt}/intermediates/0")]
    host.acme_root.write_bytes(b"".join(p if p.endswith(b"\n") else p + b"\n" for p in pems))


def _wait_ssh(host: TestHost, timeout: float = SSH_READY_TIMEOUT) -> None:
    def logged_in() -> bool | str:
        with socket.create_connection((host.address, 22), timeout=1):
            pass
        done = host.ssh("true", timeout=20)
        return done.returncode == 0 or done.stderr.strip()

    _poll(host, "nspawn", f"SSH as root at {host.address}", timeout, logged_in, (OSError, subprocess.TimeoutExpired))


def _wait_ssh_banner(host: TestHost, timeout: float = SSH_READY_TIMEOUT) -> None:
    """Wait until sshd answers with its banner (whoever may log in)."""
    def banner() -> bool | None:
        with socket.create_connection((host.address, 22), timeout=1) as sock:
            sock.settimeout(5)
            return True if sock.recv(64).startswith(b"SSH-") else None

    _poll(host, "nspawn", f"SSH answering at {host.address}", timeout, banner)


def _wait_booted(host: TestHost, timeout: float = BOOT_FINISHED_TIMEOUT) -> None:
    try:
        done = host.ssh("systemctl is-system-running --wait", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _timeout_error(host, "nspawn", "boot finished (systemctl is-system-running --wait)",
                             timeout) from None
    status = done.stdout.strip()
    if status == "degraded":
        failed = host.ssh("systemctl --failed --no-legend --plain").stdout.strip()
        log.warning("%s booted degraded; failed units:\n%s", host.name, failed)
    elif status != "running":
        raise _timeout_error(host, "nspawn", f"a running system (systemctl says {status!r}: "
                             f"{done.stderr.strip()})", timeout)


# ---------------------------------------------------------------------------------------------
# Tearing down


def _teardown(state: dict, procs: dict | None = None) -> None:
    """Remove everything STATE records; skip what is already gone.  Processes are signalled only
    while /proc still shows the very process we started."""
    procs = procs or {}
    recs = state.get("procs", {})
    nspawn = recs.get("nspawn")
    leader = state.get("leader")
    if nspawn and _alive(nspawn):
        if not _alive(leader):
            kids = _children(nspawn["pid"])
            leader = _record(kids[0]) if kids else None
        # SIGTERM makes nspawn power the container off; it removes its ephemeral copy on exit.
        if not _terminate(nspawn, procs.get("nspawn"), NSPAWN_STOP_TIMEOUT):
            log.warning("%s: systemd-nspawn did not stop within %s s; killed", state["name"],
                        NSPAWN_STOP_TIMEOUT)
    elif procs.get("nspawn") is not None:
        procs["nspawn"].poll()
    if _alive(leader):  # the container outlived its nspawn: killing its PID 1 ends them all
        _signal(leader, signal.SIGKILL)
        _wait_gone(leader, None, 5)
    for role in ("pebble", "challtestsrv", "tinyproxy"):
        if recs.get(role):
            _terminate(recs[role], procs.get(role))

    link, netns = state.get("link"), state.get("netns")
    if link and Path(f"/sys/class/net/{link}").exists():
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    if netns and (NETNS_DIR / netns).exists():
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    if state.get("image"):  # nspawn leaves its copy behind when killed, or stopped while copying
        _remove_ephemeral_copies(Path(state["image"]))
    if state.get("copy"):  # a persistent host's disk
        _remove_copy(Path(state["copy"]))

    if state.get("runtime_dir"):
        shutil.rmtree(state["runtime_dir"], ignore_errors=True)
    _state_path(state["name"]).unlink(missing_ok=True)


def _locked_by_another(path: Path, lock=fcntl.lockf, create: bool = False) -> bool:
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


def _copy_in_use(copy: Path) -> bool:
    """systemd-nspawn holds a lock on ``.#COPY.lck`` (an OFD lock, which a POSIX lock test sees)
    from before it makes its ephemeral copy until it has removed it."""
    return _locked_by_another(copy.with_name(f".#{copy.name}.lck"))


def stale_ephemeral_copies(image: Path) -> list[Path]:
    """The ``systemd-nspawn -x`` copies of IMAGE (``.#machine.NAME…`` next to it) no nspawn uses."""
    image = Path(os.path.realpath(image))
    copies = [p for p in image.parent.glob(f".#machine.{image.name}*") if p.is_dir()]
    return [p for p in copies if not _copy_in_use(p)]


def _remove_ephemeral_copies(image: Path) -> None:
    """Remove the copies of IMAGE left by containers that were killed."""
    for copy in stale_ephemeral_copies(image):
        log.info("removing leftover ephemeral copy %s", copy)
        shutil.rmtree(copy, ignore_errors=True)
        copy.with_name(f".#{copy.name}.lck").unlink(missing_ok=True)


def _remove_copy(copy: Path) -> None:
    """Remove a persistent host's copy of the image, unless a systemd-nspawn still runs on it."""
    if not copy.exists():
        return
    if _copy_in_use(copy):
        log.warning("not removing %s: a systemd-nspawn still runs on it", copy)
        return
    shutil.rmtree(copy, ignore_errors=True)
    copy.with_name(f".#{copy.name}.lck").unlink(missing_ok=True)
    if copy.exists():
        log.warning("could not remove all of %s", copy)


def _owner_alive(state: dict) -> bool:
    return _alive(state.get("owner"))


def reap_stale() -> None:
    """Tear down leftovers of earlier runs that died: hosts whose owner process is gone, and our
    namespaces, links, processes, runtime dirs and image copies that no live host claims."""
    require_host(("ip",))
    with _flock(STATE_LOCK):
        for state in _load_states():
            if not _owner_alive(state):
                log.info("reaping stale test host %s (owner %s gone)", state["name"], state["owner"]["pid"])
                _teardown(state)
        _reap_orphans(_load_states())
        _remove_dead_builds()


def _reap_orphans(states: list[dict]) -> None:
    """Our things that no state file claims (a run killed between creating and recording them)."""
    names = {s["name"] for s in states}
    netnses = {s.get("netns") for s in states}
    links = {s.get("link") for s in states}
    slots = {s.get("slot") for s in states}

    def slot_free(slot: int) -> bool:  # not being set up right now by a live process
        return not _locked_by_another(RUN_DIR / f"slot-{slot}.lock", lock=fcntl.flock, create=True)

    rundir = re.escape(str(RUN_DIR))
    signatures = [  # command lines only we start, and the slot or name they belong to
        (r"systemd-nspawn\0.*--network-namespace-path=/run/netns/gw-t(\d+)\0", "slot"),
        (rf"tinyproxy\0-d\0-c\0{rundir}/([^/\0]+)/tinyproxy\.conf\0", "name"),
        (rf"pebble\0-config\0{rundir}/([^/\0]+)/pebble\.json\0", "name"),
        (rf"pebble-challtestsrv\0.*-management\0{re.escape(NET_PREFIX)}\.(\d+)\.1:\d+\0", "slot"),
    ]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        cmdline = "\0".join(_proc_argv(pid)) + "\0"
        for pattern, kind in signatures:
            m = re.match(pattern, cmdline)
            if not m:
                continue
            key = int(m.group(1)) if kind == "slot" else m.group(1)
            if (key in slots if kind == "slot" else key in names) or (kind == "slot" and not slot_free(key)):
                break
            rec = _record(pid, _proc_argv(pid))
            log.info("stopping orphan process %s: %s", pid, " ".join(rec["argv"]))
            _terminate(rec, None, NSPAWN_STOP_TIMEOUT if "nspawn" in pattern else PROCESS_STOP_TIMEOUT)
            break

    for path in NETNS_DIR.glob("gw-t*") if NETNS_DIR.is_dir() else []:
        m = re.fullmatch(r"gw-t(\d+)", path.name)
        if m and path.name not in netnses and slot_free(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", path.name], capture_output=True)
    for path in Path("/sys/class/net").glob("gw-h*"):
        m = re.fullmatch(r"gw-h(\d+)", path.name)
        if m and path.name not in links and slot_free(int(m.group(1))):
            subprocess.run(["ip", "link", "del", path.name], capture_output=True)
    for path in RUN_DIR.iterdir():
        if path.is_dir() and path.name not in names:
            shutil.rmtree(path, ignore_errors=True)
    for image in {IMAGES_DIR / s for s in SUITES} | {Path(s["image"]) for s in states if s.get("image")}:
        _remove_ephemeral_copies(image)
    copies = {s.get("copy") for s in states}  # recorded before they are made: any other is an orphan
    for copy in HOSTS_DIR.iterdir() if HOSTS_DIR.is_dir() else []:
        if copy.is_dir() and str(copy) not in copies:
            log.info("removing leftover disk of a persistent test host %s", copy)
            _remove_copy(copy)


def _remove_dead_builds() -> None:
    """Temp dirs of image builds whose builder died (a live build holds the suite's lock)."""
    if not IMAGES_DIR.is_dir():
        return
    for tmp in IMAGES_DIR.glob(".build-*"):
        m = re.match(r"\.build-([a-z]+)-", tmp.name)
        if not m:
            continue
        fd = os.open(IMAGES_DIR / f"{m.group(1)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(tmp, ignore_errors=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    for old in IMAGES_DIR.glob(".old-*"):
        shutil.rmtree(old, ignore_errors=True)


def find(name: str) -> TestHost:
    """A running host started elsewhere (e.g. by `up`), by name; for reading its addresses and files."""
    for state in _load_states():
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
    with _flock(STATE_LOCK):  # its owner, the nspawn, is gone for a moment: no reaper may see that
        states = [s for s in _load_states() if s["name"] == name]
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
            if _alive(state["procs"]["nspawn"]):
                state["owner"] = state["procs"]["nspawn"]
            _write_state(state)
            host._procs.clear()


def down(name: str | None = None) -> list[str]:
    """Tear down host NAME (or every recorded host and any orphans if None), whoever started it."""
    require_host(("ip",))
    with _flock(STATE_LOCK):
        states = _load_states()
        if name is not None:
            states = [s for s in states if s["name"] == name]
            if not states:
                raise TestHostError(f"no test host named {name} (see: python -m tests.testhost list)")
        for state in states:
            if state["name"] in _LIVE:
                _LIVE[state["name"]].stop()
            else:
                _teardown(state)
        if name is None:
            _reap_orphans(_load_states())
    return [s["name"] for s in states]


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testhost", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="boot a test host that outlives this command; print it as JSON")
    p.add_argument("--suite", default=DEFAULT_SUITE, choices=SUITES)
    p.add_argument("--name")
    p.add_argument("--persistent", action="store_true",
                   help="boot its own copy of the image (kept across reboots, removed by down)")
    p = sub.add_parser("down", help="tear down a test host")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("name", nargs="?")
    g.add_argument("--all", action="store_true", help="every recorded host and any orphans")
    sub.add_parser("list", help="list recorded test hosts")
    p = sub.add_parser("reboot", help="power a host started with `up --persistent` off and on again")
    p.add_argument("name")
    p = sub.add_parser("show", help="print a host as JSON, or one of its fields")
    p.add_argument("name")
    p.add_argument("field", nargs="?")
    p = sub.add_parser("inventory", help="write a gangway inventory for a host")
    p.add_argument("name")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--app", default="mysite")
    p.add_argument("--domain", action="append", dest="domains", help="default: app.test and www.app.test")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another key of the app section, e.g. source=../example")
    p = sub.add_parser("image", help="build the cached image only")
    p.add_argument("--suite", default=DEFAULT_SUITE, choices=SUITES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="testhost: %(message)s", stream=sys.stderr)

    try:
        if args.command == "image":
            t0 = time.monotonic()
            path = ensure_image(args.suite)
            print(json.dumps({"suite": args.suite, "image": str(path),
                              "seconds": round(time.monotonic() - t0, 1)}, indent=1))
        elif args.command == "up":
            host = start(args.suite, args.name, persistent=args.persistent)
            host._detach()
            print(json.dumps({**_host_json(host), "timings": host.timings}, indent=1))
        elif args.command == "down":
            for name in down(None if args.all else args.name):
                print(f"stopped {name}")
        elif args.command == "reboot":
            print(json.dumps({"name": args.name, "seconds": reboot_detached(args.name)}))
        elif args.command == "show":
            shown = _host_json(find(args.name))
            print(shown[args.field] if args.field else json.dumps(shown, indent=1))
        elif args.command == "inventory":
            keys = dict(item.split("=", 1) for item in args.set)
            keys = {k: int(v) if v.isdigit() else v for k, v in keys.items()}
            write_inventory(find(args.name), args.out, args.app, args.domains or ("app.test", "www.app.test"),
                            **keys)
            print(args.out)
        elif args.command == "list":
            require_host(("ip",))
            for st in _load_states():
                status = st.get("status") if _owner_alive(st) else "stale"
                owner = "detached" if st.get("detached") else f"pid {st['owner']['pid']}"
                address = st.get("host", {}).get("address") or f"{NET_PREFIX}.{st['slot']}.2"
                print(f"{st['name']}\t{st['suite']}\t{address}\t{status}\t{owner}")
    except TestHostError as exc:
        print(f"testhost: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # python3 -m tests.testhost.host; tests.testhost runs __main__.py
    sys.exit(main())
