"""Smoke test of the test-host harness itself: real containers, real network, real teardown."""

import json
import os
import signal
import socket
import ssl
import struct
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
    if state.get("image"):  # a cluster has none of its own
        found += [str(p) for p in testhost.stale_ephemeral_copies(Path(state["image"]))]
    return found


def recorded(name: str) -> list[dict]:
    """The record of host or cluster NAME, then those of its members."""
    state = json.loads((testhost.RUN_DIR / f"{name}.json").read_text())
    return [state, *(json.loads((testhost.RUN_DIR / f"{m}.json").read_text()) for m in state.get("members", ()))]


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
@pytest.mark.parametrize("start", [pytest.param("start()", id="host"),
                                   pytest.param("start_cluster(['a', 'b'])", id="cluster",
                                                marks=pytest.mark.xdist_group("testhost-cluster"))])
def test_host_of_a_dead_process_is_cleaned_up(start, signum):
    """SIGTERM: the owner tears its host (or cluster) down itself.  SIGKILL: the next reap_stale does."""
    code = f"from tests import testhost; import time; print(testhost.{start}.name, flush=True); time.sleep(600)"
    owner = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        name = owner.stdout.readline().strip()
        assert name, "the owner process did not start a host"
        states = recorded(name)
        owner.send_signal(signum)
        owner.wait(60)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    if signum == signal.SIGKILL:
        assert all(leftovers(state) != [] for state in states)
        testhost.reap_stale()
    assert [leftovers(state) for state in states] == [[]] * len(states)


def dns_answer(server: str, port: int, name: str) -> list[str]:
    """The addresses the DNS server at SERVER:PORT gives for NAME (one A query over UDP)."""
    query = struct.pack(">6H", 0x6777, 0x0100, 1, 0, 0, 0)  # id, recursion desired, one question
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack(">2H", 1, 1)  # A, IN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(query, (server, port))
        reply = sock.recv(4096)
    count, at, found = struct.unpack(">H", reply[6:8])[0], len(query), []
    for _ in range(count):
        at += 2 if reply[at] >= 0xC0 else reply.index(b"\0", at) + 1 - at  # a compressed name, or a whole one
        kind, _, _, length = struct.unpack(">HHIH", reply[at:at + 10])
        if kind == 1:
            found.append(socket.inet_ntoa(reply[at + 10:at + 10 + length]))
        at += 10 + length
    return found


@pytest.mark.xdist_group("testhost-cluster")
def test_cluster_members_reach_each_other_apt_and_the_dns_and_tear_down():
    with testhost.start_cluster(["lb", "web", "db"]) as cluster:
        states = recorded(cluster.name)
        hosts = list(cluster.members.values())
        prefix = cluster.gateway.rsplit(".", 1)[0]
        assert cluster.gateway == f"{prefix}.1" and cluster.network == f"{prefix}.0/24"
        assert [h.address for h in hosts] == [f"{prefix}.2", f"{prefix}.3", f"{prefix}.4"]

        for host in hosts:
            # This machine reaches each member, which has its own address and no route out.
            with socket.create_connection((host.address, 22), timeout=10) as sock:
                assert sock.recv(4).startswith(b"SSH-")
            addresses = host.ssh("ip -4 -o addr show scope global").stdout
            assert f" {host.address}/24 " in addresses, addresses
            assert host.ssh("ip route get 1.1.1.1").returncode != 0
            # Each member reaches the others directly, over the bridge.
            others = [h.address for h in hosts if h is not host]
            probe = "; ".join(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{a}/22; head -c 4 <&3'; echo ' {a}'"
                              for a in others)
            reached = host.ssh(probe)
            assert reached.stdout.splitlines() == [f"SSH- {a}" for a in others], reached.stdout + reached.stderr

        # All of them reach apt through the cluster's one proxy, at the same time.
        updates = [subprocess.Popen(h.ssh_argv(f"apt-get -o Acquire::http::Proxy={h.proxy_url} update"),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for h in hosts]
        for host, update in zip(hosts, updates):
            out = update.communicate(timeout=300)[0]
            assert host.proxy_url == cluster.proxy_url and update.returncode == 0 and "Err:" not in out, out

        # pebble's DNS answers every name with the first member, unless told otherwise for a name.
        assert dns_answer(cluster.gateway, 8053, "app.test") == [cluster["lb"].address]
        cluster.set_dns("app.test", cluster["web"].address)
        assert dns_answer(cluster.gateway, 8053, "app.test") == [cluster["web"].address]
        assert dns_answer(cluster.gateway, 8053, "www.app.test") == [cluster["lb"].address]
        context = ssl.create_default_context(cafile=str(cluster.acme_ca_bundle))
        with urllib.request.urlopen(cluster.acme_directory, context=context, timeout=10) as response:
            assert "newAccount" in json.load(response)
    assert [leftovers(state) for state in states] == [[], [], [], []]


@pytest.mark.xdist_group("testhost-cluster")
def test_cluster_member_reboots_with_its_address_and_links():
    with testhost.start_cluster(["a", "b"], persistent=True) as cluster:
        a, b = cluster["a"], cluster["b"]
        link = Path("/sys/class/net", a._state["link"])
        before = (link / "ifindex").read_text()
        a.reboot()
        assert (link / "ifindex").read_text() == before
        assert (link / "master").resolve().name == cluster.bridge
        addresses = a.ssh("ip -4 -o addr show scope global")
        assert f" {a.address}/24 " in addresses.stdout, addresses.stdout + addresses.stderr
        reached = b.ssh(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{a.address}/22; head -c 4 <&3'")
        assert reached.stdout == "SSH-", reached.stdout + reached.stderr


@pytest.mark.xdist_group("testhost-cluster")
def test_cluster_from_the_command_line():
    def testhost_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tests.testhost", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    shown = json.loads(testhost_cli("up", "--cluster", "web", "db"))
    states = recorded(shown["name"])
    try:
        assert list(shown["members"]) == ["web", "db"]
        web, db = (testhost.find(m["name"]) for m in shown["members"].values())
        prefix = shown["gateway"].rsplit(".", 1)[0]
        assert (web.address, db.address) == (f"{prefix}.2", f"{prefix}.3")
        assert web.ssh(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{db.address}/22'").returncode == 0
        stopped = testhost_cli("down", shown["name"]).splitlines()
        assert stopped == [f"stopped {shown['name']}", f"stopped {web.name}", f"stopped {db.name}"]
    finally:
        if (testhost.RUN_DIR / f"{shown['name']}.json").exists():
            testhost.down(shown["name"])
    assert [leftovers(state) for state in states] == [[], [], []]
