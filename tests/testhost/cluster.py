"""Several test hosts on one private network: a cluster.

A cluster takes one slot's /24 (network.py): a bridge on this machine with its address (.1), where one
tinyproxy and one pebble with pebble-challtestsrv serve all members, and each member in its own namespace with
a veth on the bridge, at .2, .3, ... in the order given.  Members reach each other directly, and this machine
reaches each.  Every member is a TestHost, recorded, booted and rebooted as a single host is; they boot side by
side, so a cluster starts about as fast as one host.  The cluster's own record holds the bridge and the
helpers and lists its members, so tearing it down (``stop``, ``down NAME``, ``reap_stale``) takes them too.

    with testhost.start_cluster(["lb", "web1", "db"]) as cluster:
        cluster.set_dns("app.test", cluster["lb"].address)
        cluster["web1"].ssh(f"exec 3<>/dev/tcp/{cluster['db'].address}/5432")
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import network
from .common import (DEFAULT_SUITE, RUN_DIR, START_TOOLS, STATE_LOCK, TestHostError, check_suite, flock,
                     in_parallel, log, require_host)
from .host import (_LIVE, TestHost, _host_json, _install_signal_handlers, check_name, claim_slot, new_host,
                   power_on, wait_ready)
from .image import ensure_image, ensure_ssh_key
from .processes import PEBBLE_PORT, record, set_dns, start_helpers
from .state import reap_stale, state_path, teardown, write_state


@dataclass
class Cluster:
    """Running test hosts on one bridge, by member name; ``stop()`` (or leaving the ``with`` block) removes
    them all, with the bridge and the helpers."""

    __test__ = False  # not a pytest test class

    name: str
    suite: str
    slot: int
    bridge: str
    network: str  # the cluster's /24
    gateway: str  # this machine's address on the bridge, where the helpers listen
    proxy_url: str
    acme_directory: str
    acme_ca_bundle: Path
    acme_root: Path
    members: dict[str, TestHost]
    _state: dict = field(default_factory=dict, repr=False, compare=False)
    _procs: dict = field(default_factory=dict, repr=False, compare=False)
    _lock_fd: int | None = field(default=None, repr=False, compare=False)
    _done: bool = field(default=False, repr=False, compare=False)

    def __getitem__(self, member: str) -> TestHost:
        return self.members[member]

    def set_dns(self, name: str, address: str) -> None:
        """Make pebble's DNS answer NAME with ADDRESS; other names resolve to the first member."""
        set_dns(self.gateway, name, address)

    def stop(self) -> None:
        """Tear down the members (side by side), then the helpers and the bridge.  Safe to call more than once."""
        if self._done:
            return
        _LIVE.pop(self.name, None)
        t0 = time.monotonic()
        try:
            in_parallel(TestHost.stop, list(self.members.values()))
        finally:
            try:
                teardown(self._state, self._procs)
            finally:
                self._done = True
                self._state.setdefault("timings", {})["stop"] = round(time.monotonic() - t0, 2)
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    @property
    def timings(self) -> dict:
        """Seconds spent in each phase of start and stop, for reports (each member has its own too)."""
        return self._state.get("timings", {})

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _detach(self) -> None:
        """Hand the cluster over: each member to its container, the rest to its tinyproxy, which stands in
        for the owner (the cluster is stale once it is gone); ``down`` removes it."""
        _LIVE.pop(self.name, None)
        for host in self.members.values():
            host._detach()
        self._state["owner"] = self._state["procs"]["tinyproxy"]
        self._state["detached"] = True
        write_state(self._state)
        self._procs.clear()
        self._done = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def start_cluster(members, suite: str = DEFAULT_SUITE, name: str | None = None,
                  persistent: bool = False) -> Cluster:
    """Boot one fresh server per name of MEMBERS, all on one bridge, and wait until each is ready.

    NAME names the cluster (default: its bridge's name); member M's host is named NAME-M.  PERSISTENT boots
    each on its own copy of the image, so that a member's ``reboot()`` keeps its disk (and, as ever, its
    address and links)."""
    members = list(members)
    check_suite(suite)
    require_host(START_TOOLS)
    if not members or len(set(members)) != len(members) or len(members) > 253:
        raise TestHostError(f"a cluster needs 1 to 253 members with different names, not {members!r}")
    prefix = name or network.bridge_name(max(network.SLOTS))  # the longest default name
    for each in [prefix, *members, *(f"{prefix}-{m}" for m in members)]:
        check_name(each)
    reap_stale()
    image = ensure_image(suite)
    key = ensure_ssh_key()
    with flock(STATE_LOCK):  # so that reap_stale never sees half of a new cluster
        cluster = _allocate_locked(suite, name, members, image, key, persistent)
    _install_signal_handlers()
    try:
        _launch(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cluster_json(cluster: Cluster) -> dict:
    return {"name": cluster.name, "suite": cluster.suite, "network": cluster.network, "bridge": cluster.bridge,
            "gateway": cluster.gateway, "proxy_url": cluster.proxy_url, "acme_directory": cluster.acme_directory,
            "acme_ca_bundle": str(cluster.acme_ca_bundle), "acme_root": str(cluster.acme_root),
            "runtime_dir": cluster._state.get("runtime_dir"),
            "members": {member: _host_json(host) for member, host in cluster.members.items()}}


def _allocate_locked(suite: str, name: str | None, members: list[str], image: Path, key: Path,
                     persistent: bool) -> Cluster:
    """Claim a free slot (lock held for the cluster's life); record the cluster, then each member."""
    def names_of(slot: int) -> list[str]:
        cluster = name or network.bridge_name(slot)
        return [cluster, *(f"{cluster}-{m}" for m in members)]

    if name is not None and any(state_path(n).exists() for n in names_of(0)):
        raise TestHostError(f"a test host named {name} (or one of its members) already exists "
                            "(see: python -m tests.testhost list)")
    slot, fd = claim_slot(names_of)
    cluster_name, *hostnames = names_of(slot)
    gateway = network.addresses(slot)[0]
    rundir = RUN_DIR / cluster_name
    cluster = Cluster(
        name=cluster_name, suite=suite, slot=slot, bridge=network.bridge_name(slot),
        network=network.subnet(slot), gateway=gateway, proxy_url="",
        acme_directory=f"https://{gateway}:{PEBBLE_PORT}/dir", acme_ca_bundle=rundir / "pebble-ca.pem",
        acme_root=rundir / "acme-root.pem", members={}, _lock_fd=fd)
    cluster._state = {
        "name": cluster_name, "slot": slot, "suite": suite, "netns": None, "link": cluster.bridge,
        "runtime_dir": str(rundir), "members": hostnames, "status": "starting", "created": time.time(),
        "owner": record(os.getpid()), "detached": False, "procs": {}, "leader": None, "timings": {},
    }
    write_state(cluster._state)
    _LIVE[cluster_name] = cluster
    for index, (member, hostname) in enumerate(zip(members, hostnames)):
        netns, link, _ = network.member_names(slot, index)
        cluster.members[member] = new_host(hostname, suite, slot, network.member_address(slot, index), netns,
                                           link, image, key, persistent, rundir, member_of=cluster_name)
    return cluster


def _launch(cluster: Cluster) -> None:
    st, t0 = cluster._state, time.monotonic()
    hosts = list(cluster.members.values())
    Path(st["runtime_dir"]).mkdir(parents=True, exist_ok=True)
    network.create_bridge(cluster.slot)
    for index in range(len(hosts)):  # every port on the bridge before any container talks through it
        network.create_member(cluster.slot, index)
    st["timings"]["network"] = round(time.monotonic() - t0, 2)

    in_parallel(lambda host: power_on(host, t0), hosts)
    start_helpers(cluster, hosts[0].address)  # while the containers boot
    for host in hosts:
        host.proxy_url = cluster.proxy_url
    st["timings"]["services"] = round(time.monotonic() - t0, 2)

    in_parallel(lambda host: wait_ready(host, t0), hosts)
    st["timings"]["ready"] = round(time.monotonic() - t0, 2)
    st["status"] = "running"
    st["cluster"] = cluster_json(cluster)
    write_state(st)
    log.info("cluster %s ready on %s in %.1f s: %s", cluster.name, cluster.network, st["timings"]["ready"],
             ", ".join(f"{m} {h.address}" for m, h in cluster.members.items()))
