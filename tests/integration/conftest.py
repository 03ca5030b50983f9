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


# Modules that share a provisioned Debian 13 server (the `trixie` fixture), in the order they run on it. Each
# list is one server: under pytest-xdist (the README's test command: `-n 4 --dist loadgroup`) a list is one
# group, run in this order by one worker, and since a session fixture belongs to its worker, each list gets a
# server of its own and the lists run side by side. Run without xdist, the lists run one after the other on
# one server. On each, the provision checks come first (they expect the placeholder page), deploys under
# keep-alive load after the release history, and test_reboot last, because it powers its server off and on.
# Every module starts from the state it needs (appsite.make_site resets the database), so a module may move
# from one list to the other to balance their times. Modules that boot servers of their own are groups of
# their own, and a test of theirs marked with a group of its own (`pytest.mark.xdist_group`) keeps it.
SHARED_SERVER_RUNS = {
    "trixie-1": ["test_provision", "test_judges", "test_hostile", "test_releases", "test_hostkeys",
                 "test_keepalive", "test_beginners", "test_backups", "test_operate", "test_build_failures",
                 "test_sizing"],
    "trixie-2": ["test_asgi", "test_dryrun", "test_hooks", "test_jobs", "test_migration_safety",
                 "test_processes", "test_readiness", "test_redis", "test_standby", "test_status", "test_celery",
                 "test_django_tasks", "test_reboot"],
}


def _place(module: str) -> tuple[int, int] | None:
    """(which shared server, position on it) of a module listed in SHARED_SERVER_RUNS, else None."""
    for run, modules in enumerate(SHARED_SERVER_RUNS.values()):
        if module in modules:
            return run, modules.index(module)
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the marks
def pytest_collection_modifyitems(config, items):
    groups = list(SHARED_SERVER_RUNS)
    for item in items:
        if "tests/integration" not in str(item.fspath):
            continue
        item.add_marker(pytest.mark.integration)
        module = Path(str(item.fspath)).stem
        place = _place(module)
        if place is None and "trixie" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{module} uses the shared trixie server: add it to SHARED_SERVER_RUNS in "
                                    "tests/integration/conftest.py")
        if place is not None or item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(groups[place[0]] if place else module))

    def rank(item):
        if "tests/integration" not in str(item.fspath):
            return (0,)
        place = _place(Path(str(item.fspath)).stem)
        return (1, *place) if place else (2,)
    items.sort(key=rank)


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
