"""The cached Debian image a test host boots, the harness SSH key, and the copies of the image that
containers boot on (nspawn's ephemeral ones, and persistent hosts' own disks).

The image is debootstrapped once per suite from the Debian archive the host's own apt sources name (never a
hard-coded mirror), prepared as a test server (the host's extra CAs, apt sources, the harness key, a password
user, sshd) and stamped with what it was built from: a change of any of that rebuilds it.  Nothing ever
boots or changes the cached image itself."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .common import (CACHE_DIR, DEFAULT_SUITE, IMAGE_TOOLS, TestHostError, check_suite, flock, locked_by_another,
                     log, require_host, run, tail)

IMAGES_DIR = CACHE_DIR / "images"
# Disks of persistent hosts: next to the images (same file system, so a reflink copy where it can), not in
# the runtime dir, which is often a small tmpfs and a provisioned server is over a gigabyte.
HOSTS_DIR = CACHE_DIR / "hosts"
SSH_KEY = CACHE_DIR / "id_ed25519"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
APT_DIR = Path("/etc/apt")

IMAGE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "ca-certificates", "iproute2", "sudo")
IMAGE_RECIPE = 2  # bump when the image preparation changes, so cached images are rebuilt
IMAGE_STAMP = "etc/gangway-testhost-image.json"  # inside the image
IMAGE_HOSTNAME = "gangway-test"
PASSWORD_USER = "tester"
PASSWORD = "tester-password"

DEBOOTSTRAP_TIMEOUT = 1200  # seconds
COPY_TIMEOUT = 300  # seconds, for a persistent host's copy of the image

# Debian release names, to tell the Debian archive apart from third-party repositories in apt sources.
DEBIAN_SUITES = {
    "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
}


def ensure_ssh_key() -> Path:
    """The harness's ed25519 key (private key path), made once under the cache dir."""
    with flock(CACHE_DIR / "key.lock"):
        pub = SSH_KEY.with_name(SSH_KEY.name + ".pub")
        if SSH_KEY.exists() and pub.exists():
            return SSH_KEY
        require_host(("ssh-keygen",))
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
            new = Path(tmp) / "key"
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gangway-testhost", "-f", str(new)])
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
    check_suite(suite)
    require_host(IMAGE_TOOLS)
    key = ensure_ssh_key()
    mirror, security = debian_mirrors()
    wanted = _image_stamp(suite, mirror, security, key.with_name(key.name + ".pub").read_text())
    target = IMAGES_DIR / suite
    with flock(IMAGES_DIR / f"{suite}.lock"):
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
                                + tail(logfile)) from None
    if done.returncode != 0:
        inner = root / "debootstrap/debootstrap.log"
        raise TestHostError(f"debootstrap {suite} failed ({done.returncode}); "
                            + tail(logfile) + ("\n" + tail(inner) if inner.exists() else ""))


def _chroot(root: Path, *argv: str, input: str | None = None) -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    run(["chroot", str(root), *argv], what=f"in the image: {shlex.join(argv)}", input=input, env=env,
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
# Copies of the image that containers boot: systemd-nspawn -x's ephemeral ones, persistent hosts' disks


def copy_in_use(copy: Path) -> bool:
    """systemd-nspawn holds a lock on ``.#COPY.lck`` (an OFD lock, which a POSIX lock test sees)
    from before it makes its ephemeral copy until it has removed it."""
    return locked_by_another(copy.with_name(f".#{copy.name}.lck"))


def stale_ephemeral_copies(image: Path) -> list[Path]:
    """The ``systemd-nspawn -x`` copies of IMAGE (``.#machine.NAME…`` next to it) no nspawn uses."""
    image = Path(os.path.realpath(image))
    copies = [p for p in image.parent.glob(f".#machine.{image.name}*") if p.is_dir()]
    return [p for p in copies if not copy_in_use(p)]


def remove_ephemeral_copies(image: Path) -> None:
    """Remove the copies of IMAGE left by containers that were killed."""
    for copy in stale_ephemeral_copies(image):
        log.info("removing leftover ephemeral copy %s", copy)
        shutil.rmtree(copy, ignore_errors=True)
        copy.with_name(f".#{copy.name}.lck").unlink(missing_ok=True)


def remove_copy(copy: Path) -> None:
    """Remove a persistent host's copy of the image, unless a systemd-nspawn still runs on it."""
    if not copy.exists():
        return
    if copy_in_use(copy):
        log.warning("not removing %s: a systemd-nspawn still runs on it", copy)
        return
    shutil.rmtree(copy, ignore_errors=True)
    copy.with_name(f".#{copy.name}.lck").unlink(missing_ok=True)
    if copy.exists():
        log.warning("could not remove all of %s", copy)


def remove_dead_builds() -> None:
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
