"""Benchmark several servers (README, "Several servers"), as root from the repo:

    python3 -m bench.layout [--runs 3]

Boots the four-server layout (lb, web1, web2 with the worker, db) and, beside it, one server alone, all fresh,
and times in the same run:
- `fab provision` from bare of the four servers (the db host first, then the other three at once) against the
  same provision of the one server, and the second provision of each (nothing to change);
- the rolling deploy of a code change across the two web servers, one at a time (deploy.batch 1) and both at
  once (deploy.batch 2), each under HTTPS load through the load balancer (bounded in count and time, sent only
  to the test servers), counting the requests that failed.
Figures, not pass/fail: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from bench import fab, warm_bytecode
from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.inventory import write_inventory
from tests.integration.test_database_url import SETTINGS_FROM_URL
from tests.load import Load

DOMAIN = "app.test"


def provision(inventory: Path) -> float:
    seconds, result = fab("provision", "--inventory", str(inventory))
    if result.returncode != 0:
        raise SystemExit(f"provision failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def write_layout(cluster, inventory: Path, repo: AppRepo, batch: int) -> None:
    lb, web1, web2, db = (cluster[name] for name in ("lb", "web1", "web2", "db"))
    write_inventory(lb, inventory, domains=(DOMAIN,), source=repo.path, health_check="/healthz/",
                    processes={"worker": "manage.py gw_worker"}, keep_releases=20, top={"deploy": {"batch": batch}},
                    layout=[(lb, ("lb",)), (web1, ("web",)), (web2, ("web", "worker")), (db, ("db",))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rolling deploys to time at each batch size")
    args = parser.parse_args()
    with testhost.start_cluster(["lb", "web1", "web2", "db"]) as cluster, testhost.start() as single, \
            tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "project")
        repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS_FROM_URL)
        repo.write_worker("1")
        several, alone = Path(tmp) / "layout.yaml", Path(tmp) / "single.yaml"
        write_layout(cluster, several, repo, 1)
        write_inventory(single, alone, domains=(DOMAIN,), source=repo.path, health_check="/healthz/",
                        processes={"worker": "manage.py gw_worker"})
        cluster.set_dns(DOMAIN, cluster["lb"].address)
        warm_bytecode()
        figures = {"provision from bare, 4 servers": provision(several),
                   "provision from bare, 1 server": provision(alone),
                   "provision again, 4 servers": provision(several),
                   "provision again, 1 server": provision(alone)}
        lb = cluster["lb"]
        fab("deploy", "--inventory", str(several))
        deploys: dict[int, list[tuple[float, int, int]]] = {1: [], 2: []}
        for batch in (1, 2):
            write_layout(cluster, several, repo, batch)
            for i in range(args.runs):
                repo.set_version(f"bench-{batch}-{i}")
                with Load(lb.address, DOMAIN, lb.acme_root, workers=3, max_seconds=300) as load:
                    seconds, result = fab("deploy", "--inventory", str(several))
                    time.sleep(0.5)
                if result.returncode != 0 or not re.search(r"deployed \S+ to 2 hosts", result.stdout):
                    raise SystemExit(f"deploy failed:\n{result.stdout}\n{result.stderr}")
                deploys[batch].append((seconds, len(load.samples), len(load.failures())))

    print("\nseveral servers on Debian 13 (local test servers, example app with a worker)")
    for label, seconds in figures.items():
        print(f"{label:<40}{seconds:>8.2f} s")
    ratio = figures["provision from bare, 4 servers"] / figures["provision from bare, 1 server"]
    print(f"{'4 servers / 1 server, from bare':<40}{ratio:>8.2f}x (the db host first, then 3 at once)")
    print(f"\n{'rolling deploy (2 web servers)':<40}{'min':>8}{'median':>8}{'max':>8}{'requests':>10}{'failed':>8}")
    for batch, runs in deploys.items():
        walls = [r[0] for r in runs]
        print(f"{f'deploy.batch {batch}':<40}{min(walls):>8.2f}{statistics.median(walls):>8.2f}{max(walls):>8.2f}"
              f"{sum(r[1] for r in runs):>10}{sum(r[2] for r in runs):>8}")
    print("(the servers, the load and fab share this machine's cores: times are inflated, ratios are what count)")


if __name__ == "__main__":
    main()
