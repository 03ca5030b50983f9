"""Benchmark `fab provision` on local throwaway Debian servers (run as root from the repository):

    python3 -m bench.provision [--suite trixie] [--runs 3]

Prints wall time, remote commands and SSH connections for a fresh provision and for a re-run with nothing to
change, next to the floor a fresh provision cannot beat: `apt-get install` of the same packages on an
identical fresh server, and next to pyinfra doing the same checks (same packages, files, directories, links,
users, services) on the same provisioned server, all measured in the same run. Figures, not pass/fail: this
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import fab, warm_bytecode
from bench.peers import pyinfra_peer
from tasks import defaults, provisioning
from tasks.connection import targets
from tasks.inventory import load
from tasks.connection.remote import Stats
from tests import testhost
from tests.integration.inventory import write_inventory

RECAP = re.compile(r"recap \S+: (\d+) steps, (\d+) changed, \d+ unchanged; (\d+) remote commands? over (\d+) SSH")


def fab_provision(inventory: Path) -> tuple[float, dict]:
    seconds, result = fab("provision", "--inventory", str(inventory))
    if result.returncode != 0:
        sys.exit(f"provision failed:\n{result.stdout}\n{result.stderr}")
    steps, changed, commands, connections = map(int, RECAP.search(result.stdout).groups())
    return seconds, {"steps": steps, "changed": changed, "commands": commands, "connections": connections}


def apt_floor(suite: str) -> float:
    """apt-get update + install of the provision's packages on a fresh server, through the same proxy."""
    with testhost.start(suite) as host:
        proxy = f"-o Acquire::http::Proxy={host.proxy_url} -o Acquire::https::Proxy={host.proxy_url}"
        command = (f"apt-get -q {proxy} update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -q -y {proxy} "
                   f"install --no-install-recommends {' '.join(defaults.PACKAGES)} >/dev/null")
        started = time.monotonic()
        result = host.ssh(command, timeout=900)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            sys.exit(f"apt-get install failed on the baseline server:\n{result.stderr}")
        return seconds


def pyinfra_runs(host: testhost.TestHost, inventory_path: Path, workdir: Path, runs: int) -> list[float]:
    """pyinfra's no-change runs over the same state: one run to settle, then `runs` timed ones."""
    inventory = load(str(inventory_path))
    remote = targets.login(inventory.hosts[0], inventory, Stats())
    server = provisioning.Server(inventory, inventory.hosts[0], targets.public_keys(inventory.hosts[0], inventory),
                                 lambda: None)
    steps = provisioning.steps(server)
    facts = remote.gather(p for s in steps for p in s.probes())
    remote.close()
    spec_file = workdir / "peer-spec.json"
    spec_file.write_text(json.dumps(pyinfra_peer.spec(server, facts, workdir)))
    pyinfra_peer.run(host.address, inventory.deploy_user, host.ssh_key, spec_file)
    return [pyinfra_peer.run(host.address, inventory.deploy_user, host.ssh_key, spec_file) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=testhost.DEFAULT_SUITE, choices=testhost.SUITES)
    parser.add_argument("--runs", type=int, default=5, help="no-change re-runs to time (median is printed)")
    args = parser.parse_args()

    testhost.ensure_image(args.suite)
    floor = apt_floor(args.suite)
    with testhost.start(args.suite) as host, tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "bench.yaml"
        write_inventory(host, inventory, app="mysite", domains=("app.test", "www.app.test"))
        warm_bytecode()
        fresh, fresh_stats = fab_provision(inventory)
        reruns = [fab_provision(inventory) for _ in range(args.runs)]
        peer = pyinfra_runs(host, inventory, Path(tmp), args.runs)

    again = statistics.median(s for s, _ in reruns)
    again_stats = reruns[0][1]
    print(f"\nfab provision on Debian {args.suite} (local test server)")
    print(f"{'run':<36}{'wall s':>8}{'changed':>9}{'commands':>10}{'ssh conns':>11}")
    print(f"{'apt-get install alone (floor)':<36}{floor:>8.1f}{'':>9}{'':>10}{'':>11}")
    print(f"{'fresh provision':<36}{fresh:>8.1f}{fresh_stats['changed']:>9}{fresh_stats['commands']:>10}"
          f"{fresh_stats['connections']:>11}")
    print(f"{f'no-change re-run (median of {args.runs})':<36}{again:>8.2f}{again_stats['changed']:>9}"
          f"{again_stats['commands']:>10}{again_stats['connections']:>11}")
    peer_median = statistics.median(peer)
    print(f"{f'pyinfra, same checks (median of {args.runs})':<36}{peer_median:>8.2f}")
    print(f"\nfresh / apt floor: {fresh / floor:.2f}x (target 1.3x plus the certificate)")
    print(f"no-change re-runs: {', '.join(f'{s:.2f}' for s, _ in reruns)} s (target < 1.5 s)")
    print(f"pyinfra no-change runs: {', '.join(f'{s:.2f}' for s in peer)} s; gangway is {peer_median / again:.1f}x "
          "faster")


if __name__ == "__main__":
    main()
