"""SSH hardening: keys only, no root login, modern algorithms only, limits on logins and sessions.

Applied only after the deploy user's key login is proven, and proven again by a new connection afterwards
(fab's own client, paramiko, must still agree on every algorithm); if that fails, the algorithm choices are
taken back and only the login rules stay.
"""

from __future__ import annotations

from ..commands import shell
from . import Server
from ..commands.render import render
from ..facts.steps import Change, Check, Facts, File, Probe, Step

# sshd takes the first value it reads; drop-ins are read before the main file, in name order.
HARDENING = "/etc/ssh/sshd_config.d/00-gangway.conf"
HOST_KEY = "/etc/ssh/ssh_host_{}_key"

# In order of preference. Post-quantum hybrids first (ML-KEM from OpenSSH 9.9, sntrup761 from 8.5), then
# X25519, then the big finite-field groups. No NIST curves (ecdh-sha2-*), no SHA-1, and no group exchange,
# so there are no small moduli to weed out of /etc/ssh/moduli.
KEX = ("mlkem768x25519-sha256", "sntrup761x25519-sha512@openssh.com", "curve25519-sha256",
       "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512")
# AEAD ciphers first; CTR modes for clients without them (they get an encrypt-then-MAC below).
CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
           "aes256-ctr", "aes192-ctr", "aes128-ctr")
MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com")
RSA_MIN_BITS = 3072


def parse_algorithms(out: str, rc: int) -> frozenset[str]:
    return frozenset(out.split())


def parse_host_keys(out: str, rc: int) -> dict[str, int]:
    """{"ed25519": 256, "rsa": 3072}: the host keys present, with their sizes in bits."""
    keys = {}
    for line in out.splitlines():
        kind, _, bits = line.partition(" ")
        if bits.strip().isdigit():
            keys[kind] = int(bits)
    return keys


# What this server's OpenSSH knows (the client and the server come from the same source package).
ALGORITHMS = Probe("ssh-algorithms", "for kind in kex cipher mac key-sig; do ssh -Q \"$kind\"; done 2>/dev/null; true",
                   parse_algorithms)
HOST_KEYS = Probe("ssh-host-keys",
                  "for kind in ed25519 rsa; do f=/etc/ssh/ssh_host_${kind}_key.pub; "
                  "if [ -f \"$f\" ]; then echo \"$kind $(ssh-keygen -lf \"$f\" | cut -d' ' -f1)\"; fi; done; true",
                  parse_host_keys)


def supported(wanted: tuple[str, ...], known: frozenset[str]) -> list[str]:
    """The wanted algorithms this OpenSSH knows. Without an answer, all but ML-KEM (OpenSSH 9.9+): every
    other one is in Debian 12's OpenSSH 9.2."""
    return [a for a in wanted if a in known] or [a for a in wanted if not a.startswith("mlkem")]


def keep_rsa(host_keys: dict[str, int]) -> bool:
    return host_keys.get("rsa", 0) >= RSA_MIN_BITS


def sshd_config(deploy_user: str, known: frozenset[str], host_keys: dict[str, int], crypto: bool = True) -> str:
    rsa = keep_rsa(host_keys)
    return render("ssh/hardening.conf.j2", deploy_user=deploy_user, crypto=crypto,
                  kex=supported(KEX, known), ciphers=supported(CIPHERS, known), macs=supported(MACS, known),
                  rsa=rsa, host_keys=[HOST_KEY.format("ed25519")] + ([HOST_KEY.format("rsa")] if rsa else []),
                  host_key_algorithms=["ssh-ed25519"] + (["rsa-sha2-512", "rsa-sha2-256"] if rsa else []))


def _ed25519_key(host_keys: dict[str, int], facts: Facts) -> list[Change]:
    if "ed25519" in host_keys:
        return []
    path = HOST_KEY.format("ed25519")
    return [Change("Ed25519 host key generated", (f"rm -f {path} {path}.pub",
                                                   f"ssh-keygen -q -t ed25519 -N '' -f {path}"))]


def _note(facts: Facts) -> str:
    rsa = "Ed25519 + RSA host keys" if keep_rsa(facts[HOST_KEYS.key]) else "Ed25519 host key"
    return f"no root login, no passwords; {rsa}, no NIST curves"


def hardening(server: Server) -> Step:
    user = server.inventory.deploy_user

    def config(facts: Facts) -> str:
        return sshd_config(user, facts[ALGORITHMS.key], facts[HOST_KEYS.key])

    # If fab cannot connect any more, keep the login rules but let sshd choose its algorithms again.
    fallback = sshd_config(user, frozenset(), {}, crypto=False)
    return Step("ssh hardening", [
        Check(HOST_KEYS, _ed25519_key),
        File(HARDENING, config),
    ], extra_probes=[ALGORITHMS], before=server.prove_deploy_login, validate="mkdir -p /run/sshd && sshd -t",
        after=["systemctl reload ssh"], confirm=server.prove_deploy_login,
        undo=shell.script(shell.write_file(HARDENING, fallback, "644", "root", "root"), "systemctl reload ssh"),
        note=_note)
