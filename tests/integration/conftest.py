"""Fixtures that give tests real servers: booted fresh from a cached Debian image, provisioned by the real
`fab provision` command, torn down at the end of the session even when a test fails."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import testhost
from tests.integration.inventory import write_inventory

REPO = Path(__file__).resolve().parents[2]
APP = "mysite"
DOMAINS = ("app.test", "www.app.test")


# Modules that share the provisioned trixie server run in this order: provision checks first (they expect
# the placeholder page), then the release history, then deploys under keep-alive load. Unlisted modules run
# after them, and test_reboot last of all, because it powers the shared server off and on.
MODULE_ORDER = ["test_provision", "test_judges", "test_hostile", "test_releases", "test_hostkeys",
                "test_faults", "test_keepalive", "test_bookworm"]
LAST = ["test_reboot"]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)

    def rank(item):
        name = Path(str(item.fspath)).stem
        if name in LAST:
            return (len(MODULE_ORDER) + 1 + LAST.index(name),)
        return (MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER),)
    items.sort(key=lambda item: ("tests/integration" in str(item.fspath), rank(item)))


@pytest.fixture(scope="session", autouse=True)
def _integration_prerequisites(request):
    """Integration tests need root and the host packages .ci/run installs: say so instead of skipping."""
    if not any("tests/integration" in str(i.fspath) for i in request.session.items):
        return
    if os.geteuid() != 0:
        pytest.exit("integration tests boot containers: run them as root (or deselect with -m 'not integration')", 2)
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "tinyproxy", "pebble") if not shutil.which(tool)]
    if missing:
        pytest.exit(f"missing host tools: {', '.join(missing)}; run `bash .ci/run` once or apt-get install "
                    "debootstrap systemd-container tinyproxy pebble", 2)
    testhost.reap_stale()


def fab(*args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it from the repository."""
    result = subprocess.run([sys.executable, "-m", "fabric", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"fab {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Provisioned:
    host: testhost.TestHost
    inventory: Path
    first_run: subprocess.CompletedProcess

    def provision(self, check: bool = True) -> subprocess.CompletedProcess:
        return fab("provision", "--inventory", str(self.inventory), check=check)

    def ssh(self, command: str, user: str = "deploy") -> subprocess.CompletedProcess:
        return self.host.ssh(command, user=user)

    def root(self, command: str) -> subprocess.CompletedProcess:
        """A root command, through the deploy user's sudo (root cannot log in any more)."""
        return self.host.ssh(f"sudo -n sh -c {shlex.quote(command)}", user="deploy")


def provision_fresh(suite: str, tmp_path_factory, persistent: bool = False) -> Provisioned:
    host = testhost.start(suite, persistent=persistent)
    try:
        inventory = tmp_path_factory.mktemp(f"inventory-{suite}") / "test.yaml"
        write_inventory(host, inventory, app=APP, domains=DOMAINS)
        return Provisioned(host, inventory, fab("provision", "--inventory", str(inventory)))
    except BaseException:
        host.stop()
        raise


@pytest.fixture(scope="session")
def trixie(tmp_path_factory):
    # On its own disk, not an ephemeral copy: test_reboot really reboots it (TestHost.reboot).
    server = provision_fresh("trixie", tmp_path_factory, persistent=True)
    yield server
    server.host.stop()


@pytest.fixture(scope="module")
def bookworm(tmp_path_factory):
    server = provision_fresh("bookworm", tmp_path_factory)
    yield server
    server.host.stop()
