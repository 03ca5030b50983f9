"""Throwaway Debian servers on this machine, for integration tests.

A test host is a debootstrapped Debian image (image.py) booted with ``systemd-nspawn -x`` (an ephemeral copy,
so the cached image is never changed), or, with ``persistent=True``, booted on its own copy of the image that
keeps its disk across ``reboot()`` (removed at teardown), inside its own network namespace, joined to the host
by a veth pair on its own /24 (network.py: 10.213.N.0/24, host end .1, container .2).  The container has no
route out: next to it the host runs, on 10.213.N.1, a private tinyproxy (its way to apt and PyPI) and a pebble
ACME server with pebble-challtestsrv answering every DNS name with the container's address (processes.py).

    with testhost.start() as host:
        host.ssh("systemctl is-system-running")

Several servers on one private network (a bridge on this machine, one veth each, one proxy and pebble for all)
come from ``start_cluster`` (cluster.py):

    with testhost.start_cluster(["lb", "web1", "db"]) as cluster:
        cluster["web1"].ssh(f"exec 3<>/dev/tcp/{cluster['db'].address}/22")

From a shell (as root): ``python -m tests.testhost up [--persistent] [--cluster MEMBER...]|reboot NAME|down
NAME|--all|list|image`` (cli.py).  Everything a host or cluster holds is recorded in
/run/gangway-testhost/NAME.json, so that a later run can tear down what a dead one left behind (state.py:
``reap_stale``).  Only the standard library is used here.
The gangway inventory for a host is written by the tests (tests/integration/inventory.py).
"""

from .cluster import Cluster, start_cluster
from .common import (CACHE_DIR, DEFAULT_SUITE, RUN_DIR, SUITES, HostSetupError, TestHostError,
                     require_host)
from .host import TestHost, down, find, reboot_detached, start
from .image import (IMAGES_DIR, SSH_KEY, debian_mirrors, ensure_image, ensure_ssh_key,
                    stale_ephemeral_copies)
from .processes import alive
from .state import reap_stale

__all__ = ["CACHE_DIR", "DEFAULT_SUITE", "RUN_DIR", "SUITES", "HostSetupError", "TestHostError", "require_host",
           "Cluster", "start_cluster", "TestHost", "down", "find", "reboot_detached", "start", "IMAGES_DIR",
           "SSH_KEY", "debian_mirrors", "ensure_image", "ensure_ssh_key", "stale_ephemeral_copies", "alive",
           "reap_stale"]
