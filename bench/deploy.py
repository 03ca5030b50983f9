"""Benchmark `fab deploy` and `fab rollback` on a local throwaway Debian server (run as root from the repo):

    python3 -m bench.deploy [--suite trixie] [--runs 5]

Provisions a fresh test server, then times: the first deploy of the example app (Python environment built,
migrations applied), code-only deploys, a deploy with new requirements, and rollbacks with no migration: to the
release kept warm as the rollback target, or (--to) to one that must start first. Each run starts once the server
has no Gunicorn start or stop pending from the run before. Code-only deploys and rollbacks run under a continuous
HTTPS load (bounded in count and time, sent only to the test server) that counts failed requests and the worst
latency during each switch: one connection per request (tests/load.py) and, at the same time, kept-alive
connections (wrk, tests/wrk.py; skipped if wrk is not installed). Figures, not pass/fail: this machine is shared
and noisy.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import fab as run_fab, warm_bytecode
from tests import testhost
from tests.integration.inventory import write_inventory
from tests.apprepo import AppRepo
from tests.load import Load
from tests.wrk import Wrk, require_wrk

DOMAIN = "app.test"
WARM, STARTED = "warm target", "cold target"  # the release kept warm for it, or one started first
KEEPALIVE = True  # wrk is there: kept-alive connections too during the loaded switches


@dataclass
class Run:
    label: str
    wall: float
    commands: int
    requests: int = 0
    failures: int = 0
    worst: float = 0.0
    keepalive_requests: int = 0  # wrk, kept-alive connections
    keepalive_failures: int = 0  # socket errors of every kind + answers not 2xx/3xx


def fab(*args: str) -> tuple[float, str]:
    seconds, result = run_fab(*args)
    if result.returncode != 0:
        sys.exit(f"fab {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def commands(output: str) -> int:
    return int(re.search(r"(\d+) remote commands?", output).group(1))


def settle(host: testhost.TestHost, seconds: float = 60) -> None:
    """Wait (bounded) until the server has no Gunicorn start or stop pending: a switch warms the next rollback
    target and stops old instances after it returns, and that work must not be timed as the next run's."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # as the deploy user: root may not log in once provisioned
        jobs = host.ssh("systemctl list-jobs --no-legend 'mysite@*'", user="deploy")
        if jobs.returncode != 0:
            sys.exit(f"cannot list the server's pending jobs: {jobs.stderr.strip()}")
        if not jobs.stdout.strip():
            return
        time.sleep(0.2)


def timed(label: str, host: testhost.TestHost, *args: str, load: bool = False) -> tuple[Run, str]:
    settle(host)
    if not load:
        wall, out = fab(*args)
        return Run(label, wall, commands(out)), out
    with Load(host.address, DOMAIN, host.acme_root, workers=6, max_seconds=60) as traffic:
        if not KEEPALIVE:
            wall, out = fab(*args)
        else:
            with Wrk(host.address, DOMAIN, seconds=60, connections=16, threads=2, count_answers=False) as wrk:
                wall, out = fab(*args)
    run = Run(label, wall, commands(out), len(traffic.samples), len(traffic.failures()), traffic.worst_latency())
    if KEEPALIVE:
        run.keepalive_requests, run.keepalive_failures = wrk.result.requests, wrk.result.failed
    return run, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=testhost.DEFAULT_SUITE, choices=testhost.SUITES)
    parser.add_argument("--runs", type=int, default=5, help="code-only deploys and rollbacks to time, each "
                                                           "without and then with load")
    args = parser.parse_args()
    global KEEPALIVE
    try:
        require_wrk()
    except RuntimeError as missing:
        print(f"no keep-alive figures: {missing}", file=sys.stderr)
        KEEPALIVE = False

    runs: list[Run] = []
    with testhost.start(args.suite) as host, tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "project")
        inventory = Path(tmp) / "bench.yaml"
        write_inventory(host, inventory, app="mysite", domains=(DOMAIN,), source=repo.path,
                                 health_check="/healthz/", keep_releases=2 * args.runs + 3)
        inv = ("--inventory", str(inventory))
        print("provisioning a fresh test server...", file=sys.stderr)
        fab("provision", *inv)
        warm_bytecode()

        runs.append(timed("first deploy (venv + migrations)", host, "deploy", *inv)[0])
        out = ""
        for load in (False, True):
            for i in range(args.runs):
                repo.set_version(f"bench-{load}-{i}")
                run, out = timed("code-only deploy" + (", under load" if load else ""), host, "deploy", *inv,
                                 load=load)
                runs.append(run)
        live = re.search(r"deployed (\S+) to", out).group(1)
        for load in (False, True):
            for i in range(args.runs):  # back to the previous release, then forward again to `live`
                back = ("rollback",) if i % 2 == 0 else ("rollback", "--to", live)
                run, out = timed("rollback", host, *back, *inv, load=load)
                run.label = (f"rollback, {WARM if 'nothing to start' in out else STARTED}"
                             + (", under load" if load else ""))
                runs.append(run)
        repo.commit("new requirement", **{"requirements.txt": (repo.path / "requirements.txt").read_text()
                                          + "six>=1.16\n"})
        runs.append(timed("deploy with new requirements", host, "deploy", *inv)[0])

    print(f"\nfab deploy / rollback on Debian {args.suite} (local test server, example app)")
    print(f"{'run':<40}{'wall s':>8}{'commands':>10}{'requests':>10}{'failed':>8}{'worst ms':>10}"
          + (f"{'keep-alive':>12}{'failed':>8}" if KEEPALIVE else ""))
    for run in runs:
        load = f"{run.requests:>10}{run.failures:>8}{run.worst * 1000:>10.0f}" if run.requests else ""
        if run.requests and KEEPALIVE:
            load += f"{run.keepalive_requests:>12}{run.keepalive_failures:>8}"
        print(f"{run.label:<40}{run.wall:>8.2f}{run.commands:>10}{load}")

    def median(label: str) -> str:
        walls = [r.wall for r in runs if r.label == label]
        return f"{statistics.median(walls):.2f} s" if walls else "none ran"

    print(f"\nmedian code-only deploy: {median('code-only deploy')} (target < 3 s); under load "
          f"{median('code-only deploy, under load')}")
    for kind in (WARM, STARTED):
        print(f"median rollback without migrations, {kind}: {median(f'rollback, {kind}')}"
              + (" (target < 1 s)" if kind == WARM else "") + f"; under load {median(f'rollback, {kind}, under load')}")
    loaded = [r for r in runs if r.requests]
    print(f"failed requests during switches: {sum(r.failures for r in loaded)} of "
          f"{sum(r.requests for r in loaded)} (target 0); worst latency {max(r.worst for r in loaded) * 1000:.0f} ms")
    if KEEPALIVE:
        print(f"failed keep-alive requests (wrk -c16) during switches: {sum(r.keepalive_failures for r in loaded)} "
              f"of {sum(r.keepalive_requests for r in loaded)} (target 0)")
    print("(the load runs on the same 2 cores as fab and the server, so times under load are inflated)")


if __name__ == "__main__":
    main()
