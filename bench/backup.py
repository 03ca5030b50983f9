"""Benchmark `fab backup` and `fab restore` of a 1 GB database against raw pg_dump and pg_restore of the same
database, in the same run, on a local throwaway Debian server (run as root from the repo):

    python3 -m bench.backup [--suite trixie] [--runs 3] [--scale 68]

Provisions a fresh test server and fills the app's database with pgbench's tables (`pgbench -i`, scale 68: about
1 GB on disk). Then, in each run, in turn:
- raw pg_dump: `pg_dump --format=custom` (the format and compression `fab backup` writes) into a file, over SSH;
- `fab backup`: the same dump, written owner-only under a temporary name and renamed, with its progress;
- raw pg_restore: `pg_restore --clean --if-exists --no-owner` of the raw dump, as the app's role, over SSH;
- `fab restore NAME --yes`: maintenance mode on, a dump of the database it replaces (so it can be had back),
  pg_restore in one transaction, the schema read back, maintenance off. Its like-for-like raw figure is a raw
  pg_dump plus a raw pg_restore: what an operator runs by hand to restore without losing what was there.
Figures, not pass/fail: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import fab as run_fab, warm_bytecode
from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.inventory import write_inventory

APP = "mysite"
SCALE = 68  # pgbench's scale: 100,000 accounts each, about 15 MB each with the indexes
GOAL = 1.2  # issue: backup and restore within 1.2x raw pg_dump / pg_restore


def root(host: testhost.TestHost, command: str) -> float:
    """Run `command` as root on the provisioned server (through the deploy user's sudo), and time it."""
    started = time.monotonic()
    out = host.ssh(f"sudo -n sh -c {shlex.quote(command)}", user="deploy", timeout=1800)
    if out.returncode != 0:
        sys.exit(f"on the server, `{command}` failed:\n{out.stdout}{out.stderr}")
    return time.monotonic() - started


def fab(*args: str) -> tuple[float, str]:
    seconds, result = run_fab(*args)
    if result.returncode != 0:
        sys.exit(f"fab {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout + result.stderr


def measure(runs: int, suite: str = testhost.DEFAULT_SUITE, scale: int = SCALE) -> dict:
    """Every figure of one run of this bench, as data: the database's size and each kind's seconds per run."""
    walls: dict[str, list[float]] = {"raw pg_dump": [], "fab backup": [], "raw pg_restore": [], "fab restore": []}
    with testhost.start(suite) as host, tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "project")
        inventory = Path(tmp) / "bench.yaml"
        write_inventory(host, inventory, app=APP, domains=("app.test",), source=repo.path)
        inv = ("--inventory", str(inventory))
        print("provisioning a fresh test server...", file=sys.stderr)
        fab("provision", *inv)
        warm_bytecode()
        print(f"filling the database (pgbench -i -s {scale})...", file=sys.stderr)
        root(host, f"cd / && runuser -u {APP} -- \"$(ls /usr/lib/postgresql/*/bin/pgbench | tail -n 1)\" -i -q "
                   f"-s {scale} {APP} >/dev/null 2>&1")
        size = host.ssh(f"cd / && sudo -n runuser -u postgres -- psql -X -t -A -c \"select "
                        f"pg_database_size('{APP}')\"", user="deploy").stdout.strip()
        raw = f"/srv/{APP}/backups/raw.dump"
        dump = f"cd / && runuser -u postgres -- pg_dump --format=custom --dbname={APP} > {raw}"
        restore = (f"cd / && runuser -u {APP} -- pg_restore --clean --if-exists --no-owner --dbname={APP} < {raw}")
        for i in range(runs):
            walls["raw pg_dump"].append(root(host, dump))
            seconds, out = fab("backup", *inv)
            walls["fab backup"].append(seconds)
            name = re.search(r"backups/(\S+\.dump) ", out).group(1)
            walls["raw pg_restore"].append(root(host, restore))
            walls["fab restore"].append(fab("restore", name, "--yes", *inv)[0])
            # Only the dumps of this run: the disk holds a few of them, not one per run.
            root(host, f"rm -f {raw} /srv/{APP}/backups/*.dump")
            print(f"run {i + 1} of {runs}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in walls.items()),
                  file=sys.stderr)
    return {"database_bytes": int(size) if size.isdigit() else None, "walls": walls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default=testhost.DEFAULT_SUITE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=SCALE, help="pgbench's scale (68: about 1 GB)")
    args = parser.parse_args()
    figures = measure(args.runs, args.suite, args.scale)
    walls = figures["walls"]
    size = figures["database_bytes"]
    print(f"\nbackup and restore of a {size / 1e9:.2f} GB database (pgbench, scale {args.scale}) on Debian "
          f"{args.suite}, {args.runs} runs (min / median / max)" if size else "\nbackup and restore")
    for label, values in walls.items():
        print(f"  {label:<16}{min(values):8.1f} s {statistics.median(values):8.1f} s {max(values):8.1f} s")
    median = {label: statistics.median(values) for label, values in walls.items()}
    backup = median["fab backup"] / median["raw pg_dump"]
    restore = median["fab restore"] / (median["raw pg_dump"] + median["raw pg_restore"])
    print(f"fab backup / raw pg_dump: {backup:.2f}x (goal <= {GOAL}x: {'met' if backup <= GOAL else 'NOT met'})")
    print(f"fab restore / (raw pg_dump + raw pg_restore): {restore:.2f}x (goal <= {GOAL}x: "
          f"{'met' if restore <= GOAL else 'NOT met'}); a restore first dumps the database it replaces")


if __name__ == "__main__":
    main()
