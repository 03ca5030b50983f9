"""Benchmark what a process type (app.processes) costs, on a local throwaway Debian server (run as root from the
repository):

    python3 -m bench.workers [--suite trixie] [--runs 3]

Provisions a fresh test server and deploys the example app, then times code-only deploys without a process type
and with one worker process (`manage.py gw_worker`, a database-backed worker that imports Django), in turns on
the same server (a provision between each, which adds or removes the worker's unit), min/median/max over --runs.
Then, right after the last deploy (a worker running, the previous release warm as the standby, and a few
requests served so that every Gunicorn worker has imported the app), it reads on the server the memory of the
app tier: PSS (a process's own pages plus its share of the pages it shares) from /proc/PID/smaps_rollup of every
process of the live web instance, the standby and the worker, and of everything else running there. Last, the
sizing rule's worker count and the share of memory left free, here and, from the sizes measured here, on a 1 GB
server. Figures, not pass/fail: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from shlex import quote

from bench.deploy import DOMAIN, fab, settle
from tasks import sizing
from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.inventory import write_inventory
from tests.outside import https_get

APP = "mysite"
WORKER = {"worker": "manage.py gw_worker"}
# What a server sold as 1 GB reports as MemTotal (the kernel keeps the rest).
ONE_GB_MIB = 960
WIDTH = 72  # the first column of the memory table
# Requests sent before the memory is read, per Gunicorn worker of the live instance.
WARM_REQUESTS = 8

# Run on the server as root, the unit names as its argument (JSON): each unit's processes' PSS (its main process
# apart), everything else's, MemTotal and the cores.
MEASURE = r'''
import json, os, subprocess, sys

def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except OSError:
        return None

def show(unit, prop):
    return subprocess.run(["systemctl", "show", "-P", prop, unit], capture_output=True, text=True).stdout.strip()

found, counted = {}, {os.getpid(), os.getppid()}
for unit in json.loads(sys.argv[1]):
    try:
        with open(f"/sys/fs/cgroup{show(unit, 'ControlGroup')}/cgroup.procs") as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        pids = []
    main = int(show(unit, "MainPID") or 0)
    sizes = {pid: pss_kib(pid) for pid in pids}
    found[unit] = {"main": sizes.get(main), "others": [k for p, k in sizes.items() if p != main and k is not None]}
    counted |= set(pids)
rest = sum(pss_kib(p) or 0 for p in os.listdir("/proc") if p.isdigit() and int(p) not in counted)
with open("/proc/meminfo") as f:
    total = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
print(json.dumps({"units": found, "rest_kib": rest, "memtotal_kib": total, "cores": len(os.sched_getaffinity(0))}))
'''


def measure(host: testhost.TestHost, units: list[str]) -> dict:
    out = host.ssh(f"sudo -n python3 -c {quote(MEASURE)} {quote(json.dumps(units))}", user="deploy")
    if out.returncode != 0:
        sys.exit(f"cannot read the server's memory: {out.stderr.strip()}")
    return json.loads(out.stdout)


def spread(walls: list[float]) -> str:
    return f"{min(walls):>8.2f}{statistics.median(walls):>8.2f}{max(walls):>8.2f}"


def mib(kib: float) -> float:
    return kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=testhost.DEFAULT_SUITE, choices=testhost.SUITES)
    parser.add_argument("--runs", type=int, default=3, help="code-only deploys to time of each kind")
    args = parser.parse_args()

    walls: dict[str, list[float]] = {"none": [], "worker": []}
    with testhost.start(args.suite) as host, tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "project")
        repo.write_worker("bench")
        inventory = Path(tmp) / "bench.yaml"
        inv = ("--inventory", str(inventory))

        def write(processes: dict | None) -> None:
            write_inventory(host, inventory, app=APP, domains=(DOMAIN,), source=repo.path,
                            health_check="/healthz/", keep_releases=2 * args.runs + 3,
                            **({"processes": processes} if processes else {}))

        write(None)
        print("provisioning a fresh test server...", file=sys.stderr)
        fab("provision", *inv)
        fab("deploy", *inv)  # the first: Python environment and migrations
        out = ""
        for i in range(args.runs):
            for kind in ("none", "worker"):
                write(WORKER if kind == "worker" else None)
                fab("provision", *inv)  # adds or removes the worker's unit
                repo.set_version(f"bench-{kind}-{i}")
                settle(host)
                wall, out = fab("deploy", *inv)
                walls[kind].append(wall)
        live = re.search(r"deployed (\S+) to", out).group(1)
        standby = re.search(r"; (\S+) kept warm for `fab rollback`", out).group(1)
        settle(host)
        units = [f"{APP}@{live}.service", f"{APP}@{standby}.service", f"{APP}-worker@{live}.service"]
        workers = len(measure(host, units[:1])["units"][units[0]]["others"])
        for _ in range(WARM_REQUESTS * max(workers, 1)):
            https_get(host.address, DOMAIN, host.acme_root, "/")
        found = measure(host, units)

    print(f"\ncode-only deploy on Debian {args.suite} (local test server, example app), {args.runs} of each, "
          "in turns")
    print(f"{'':<44}{'min s':>8}{'median':>8}{'max s':>8}")
    print(f"{'no process type':<44}{spread(walls['none'])}")
    print(f"{'one worker process (app.processes)':<44}{spread(walls['worker'])}")

    sizes = found["units"]
    web = [sizes[u] for u in units[:2]]
    masters = [w["main"] for w in web if w["main"] is not None]
    workers_kib = [k for w in web for k in w["others"]]
    process = sizes[units[2]]
    process_kib = (process["main"] or 0) + sum(process["others"])
    total_mib = mib(found["memtotal_kib"])
    print("\nmemory after the last deploy: PSS read from /proc/PID/smaps_rollup on the server")
    print(f"{'':<{WIDTH}}{'processes':>10}{'PSS MiB':>9}")
    tier = 0.0
    for unit, role in zip(units, ("live web instance", "standby", "worker process")):
        kib = (sizes[unit]["main"] or 0) + sum(sizes[unit]["others"])
        tier += kib
        count = len(sizes[unit]["others"]) + (sizes[unit]["main"] is not None)
        print(f"{role + ': ' + unit:<{WIDTH}}{count:>10}{mib(kib):>9.1f}")
    print(f"{'the app tier':<{WIDTH}}{'':>10}{mib(tier):>9.1f}")
    print(f"{'everything else on the server (PostgreSQL, nginx, ...)':<{WIDTH}}{'':>10}"
          f"{mib(found['rest_kib']):>9.1f}")
    master = mib(statistics.mean(masters)) if masters else 0
    worker = mib(statistics.mean(workers_kib)) if workers_kib else 0
    print(f"per process: Gunicorn master {master:.1f} MiB, Gunicorn worker {worker:.1f} MiB, worker process "
          f"{mib(process_kib):.1f} MiB (the rule counts {sizing.MASTER_MIB}, {sizing.WORKER_MIB}, "
          f"{sizing.PROCESS_MIB}; the rest of the server {sizing.OTHERS_MIB})")

    here = sizing.web_workers(found["cores"], int(total_mib), True, 1)
    print(f"\nthis server: {found['cores']} cores, MemTotal {total_mib:.0f} MiB; the rule gives {here} Gunicorn "
          f"workers (the live instance runs {len(sizes[units[0]]['others'])}); the app tier leaves "
          f"{100 * (1 - mib(tier) / total_mib):.1f} % of the memory free, with everything else "
          f"{100 * (1 - mib(tier + found['rest_kib']) / total_mib):.1f} %")
    small = sizing.web_workers(1, ONE_GB_MIB, True, 1)
    projected = 2 * (master + small * worker) + mib(process_kib) + mib(found["rest_kib"])
    counted = (sizing.OTHERS_MIB + sizing.PROCESS_MIB + 2 * (sizing.MASTER_MIB + small * sizing.WORKER_MIB))
    print(f"a 1 GB server (MemTotal {ONE_GB_MIB} MiB, 1 core) with the standby and the worker: the rule gives {small} "
          f"Gunicorn worker(s) and counts {counted} MiB in use, {100 * (1 - counted / ONE_GB_MIB):.1f} % free (goal: "
          f"at least {100 * sizing.FREE_SHARE:.0f} %); at the sizes measured here everything takes {projected:.0f} "
          f"MiB, {100 * (1 - projected / ONE_GB_MIB):.1f} % free")

if __name__ == "__main__":
    main()
