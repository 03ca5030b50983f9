"""Smoke test of the test-host harness itself: real containers, real network, real teardown."""

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import paramiko
import pytest

from tests import testhost

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _can_run_hosts():
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    testhost.require_host()  # a missing package is an error here, not a skip


def leftovers(state: dict) -> list[str]:
    """What of the host recorded in STATE is still there."""
    found = []
    netns = [line.split()[0] for line in
             subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()]
    if state["netns"] in netns:
        found.append(f"netns {state['netns']}")
    if Path("/sys/class/net", state["link"]).exists():
        found.append(f"link {state['link']}")
    for role, rec in [*state["procs"].items(), ("container", state.get("leader"))]:
        if testhost.alive(rec):
            found.append(f"{role} pid {rec['pid']}")
    for path in (testhost.RUN_DIR / f"{state['name']}.json", Path(state["runtime_dir"])):
        if path.exists():
            found.append(str(path))
    found += [str(p) for p in testhost.stale_ephemeral_copies(Path(state["image"]))]
    return found


def test_host_boots_reaches_apt_through_proxy_and_tears_down():
    host = testhost.start("trixie")
    try:
        status = host.ssh("systemctl is-system-running")
        assert status.stdout.strip() == "running", status.stdout + status.stderr

        # Out only through the proxy: apt works with it; there is no route without it.
        update = host.ssh(f"apt-get -o Acquire::http::Proxy={host.proxy_url} update", timeout=300)
        assert update.returncode == 0, update.stdout + update.stderr
        assert "Err:" not in update.stdout and "W:" not in update.stdout + update.stderr, update.stdout
        assert host.ssh("ip route get 1.1.1.1").returncode != 0

        # The password user, and password login over SSH (not yet hardened).
        assert host.ssh(f"getent passwd {host.password_user}").returncode == 0
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(host.address, username=host.password_user, password=host.password,
                       look_for_keys=False, allow_agent=False, timeout=10)
        try:
            _, out, _ = client.exec_command("id -un")
            assert out.read().decode().strip() == host.password_user
        finally:
            client.close()

        # pebble answers, with our CA, on the address the target reaches too.
        context = ssl.create_default_context(cafile=str(host.acme_ca_bundle))
        with urllib.request.urlopen(host.acme_directory, context=context, timeout=10) as response:
            assert "newAccount" in json.load(response)
        assert host.acme_root.read_text().count("BEGIN CERTIFICATE") == 2
        assert host.ssh(f"exec 3<>/dev/tcp/{host.gateway}/14000").returncode == 0
    finally:
        host.stop()
    host.stop()  # idempotent
    assert leftovers(host._state) == []


def test_two_hosts_at_once_have_their_own_addresses():
    with testhost.start("trixie") as a, testhost.start("trixie") as b:
        assert len({a.name, b.name}) == len({a.address, b.address}) == len({a.slot, b.slot}) == 2
        for host in (a, b):
            addresses = host.ssh("ip -4 -o addr show scope global").stdout
            assert f" {host.address}/24 " in addresses
    assert leftovers(a._state) == leftovers(b._state) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_host_of_a_dead_process_is_cleaned_up(signum):
    """SIGTERM: the owner tears its host down itself.  SIGKILL: the next reap_stale does."""
    code = "from tests import testhost; import time; print(testhost.start().name, flush=True); time.sleep(600)"
    owner = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        name = owner.stdout.readline().strip()
        assert name, "the owner process did not start a host"
        state = json.loads((testhost.RUN_DIR / f"{name}.json").read_text())
        owner.send_signal(signum)
        owner.wait(60)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    if signum == signal.SIGKILL:
        assert leftovers(state) != []
        testhost.reap_stale()
    assert leftovers(state) == []
