"""Host keys on a real server: the first connection shows and records the key, later ones check it, and a
changed key is refused before any command runs.

Most tests use a fresh, unprovisioned Debian 13 of their own (they regenerate its host keys). `fab releases`
serves as the probe: it logs in and runs one read-only command, then stops at "not provisioned". The last
one looks at the shared provisioned server's logins.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import testhost
from tests.integration.inventory import write_inventory, known_hosts_path
from tests.integration.conftest import REPO

FIRST_CONTACT = re.compile(r"first connection to (\S+): its (\w+) key is (SHA256:[A-Za-z0-9+/]+); recorded in (\S+)")


def fab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def server():
    host = testhost.start("trixie")
    yield host
    host.stop()


@pytest.fixture(scope="module")
def inventory(server, tmp_path_factory):
    return write_inventory(server, tmp_path_factory.mktemp("hostkeys") / "keys.yaml")


def server_fingerprint(server) -> str:
    out = server.ssh("ssh-keygen -l -E sha256 -f /etc/ssh/ssh_host_ed25519_key.pub")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[1]


def accepted_logins(server) -> int:
    """How many logins the server's sshd accepted so far (this one included)."""
    out = server.ssh("journalctl --no-pager -o cat | grep -c 'Accepted publickey' || true")
    return int(out.stdout.strip() or 0)


def probe(inventory) -> subprocess.CompletedProcess:
    out = fab("releases", "--inventory", str(inventory))
    assert "Traceback" not in out.stderr, out.stderr
    return out


def test_the_first_connection_shows_the_key_and_records_it(server, inventory):
    known = known_hosts_path(inventory)
    assert not known.exists()
    out = probe(inventory)
    assert "is not provisioned" in out.stderr, out.stdout + out.stderr  # it logged in and ran a command
    [line] = FIRST_CONTACT.findall(out.stdout)
    assert line == (server.address, "ED25519", server_fingerprint(server), str(known))
    [recorded] = known.read_text().splitlines()
    assert recorded.startswith(f"{server.address} ssh-ed25519 ")
    assert oct(known.stat().st_mode & 0o777) == "0o600"


def test_a_known_key_connects_without_a_word(inventory):
    known = known_hosts_path(inventory)
    before = known.read_text()
    out = probe(inventory)
    assert "is not provisioned" in out.stderr and "first connection" not in out.stdout, out.stdout + out.stderr
    assert known.read_text() == before


def test_a_changed_key_is_refused_before_any_command(server, inventory):
    known = known_hosts_path(inventory)
    old = server_fingerprint(server)
    regenerated = server.ssh("rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh")
    assert regenerated.returncode == 0, regenerated.stderr
    new = server_fingerprint(server)
    assert new != old
    recorded = known.read_text()
    logins = accepted_logins(server)
    # fab -H with the key file from Fabric's config; provision would create the deploy user first of all
    out = fab("-H", f"root@{server.address}", "-i", str(server.ssh_key), "provision",
              env={"FABRIC_GANGWAY_KNOWN_HOSTS": str(known)})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    message = out.stderr
    assert f"the host key of {server.address} has CHANGED" in message
    assert "intercepting" in message and "reinstalled" in message
    assert old in message and new in message
    assert f"ssh-keygen -R {server.address} -f {known}" in message
    assert "provision " + server.address not in out.stdout and "first connection" not in out.stdout
    assert known.read_text() == recorded
    assert accepted_logins(server) == logins + 1  # only the count's own login: fab never logged in
    assert server.ssh("id deploy").returncode != 0  # and provision's first step never ran


def test_accepting_a_legitimate_change_records_the_new_key(server, inventory):
    known = known_hosts_path(inventory)
    subprocess.run(["ssh-keygen", "-R", server.address, "-f", str(known)], check=True, capture_output=True)
    out = probe(inventory)
    [line] = FIRST_CONTACT.findall(out.stdout)
    assert line[2] == server_fingerprint(server) and "is not provisioned" in out.stderr


def test_fab_dash_h_checks_the_key_in_the_file_fabrics_config_names(server, inventory):
    known = known_hosts_path(inventory)
    out = fab("-H", f"root@{server.address}", "-i", str(server.ssh_key), "releases",
              env={"FABRIC_GANGWAY_KNOWN_HOSTS": str(known)})
    assert "is not provisioned" in out.stderr and "first connection" not in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_a_whole_provision_checks_every_login_against_one_recorded_key(trixie):
    """Provision logs in as the deploy user (refused on a fresh server), as root, and once more as the deploy
    user to prove its login: the key is recorded once, at the first, and every later login is checked."""
    known = known_hosts_path(trixie.inventory)
    assert len(FIRST_CONTACT.findall(trixie.first_run.stdout)) == 1, trixie.first_run.stdout
    assert len(known.read_text().splitlines()) == 1
    again = trixie.provision()
    assert "first connection" not in again.stdout and len(known.read_text().splitlines()) == 1
