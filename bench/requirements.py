"""Time `fab deploy` with new requirements on one local throwaway Debian server (run as root from the repo):
this tree's gangway (uv and its cache) against another checkout of gangway (`--against DIR`, e.g. a worktree of
the commit before uv, which builds with pip), interleaved so that both meet the same load on the machine:

    python3 -m bench.requirements --against DIR [--suite trixie] [--runs 3]

Provisions a fresh test server with this tree (which installs uv), deploys the example app once (uv's cache
starts empty: that deploy is shown apart), then runs each gangway `--runs` times, alternating which goes first,
each deploying a commit that adds a requirement no deploy on this server installed before (another release of
six), so that every timed deploy builds a new environment. Prints each run and min / median / max of each.
Figures, not pass/fail: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

from bench import REPO, fab, warm_bytecode
from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.inventory import write_inventory

DOMAIN = "app.test"
# Releases of a small pure-Python package: each deploy adds one nobody installed on the server before.
SIX = ("1.17.0", "1.16.0", "1.15.0", "1.14.0", "1.13.0", "1.12.0", "1.11.0", "1.10.0", "1.9.0", "1.8.0", "1.7.3",
       "1.6.1", "1.5.2", "1.4.1")


def deploy(repo: Path, inv: tuple[str, ...]) -> tuple[float, str]:
    """One `fab deploy` with the gangway in `repo`: its wall time and what it printed; it must build a venv."""
    seconds, result = fab("deploy", *inv, cwd=repo)
    if result.returncode != 0:
        sys.exit(f"fab deploy ({repo}) failed:\n{result.stdout}\n{result.stderr}")
    if "Python environment built" not in result.stdout:
        sys.exit(f"fab deploy ({repo}) did not build a new environment:\n{result.stdout}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="another checkout of gangway (its repo root)")
    parser.add_argument("--suite", default=testhost.DEFAULT_SUITE, choices=testhost.SUITES)
    parser.add_argument("--runs", type=int, default=3, choices=range(1, len(SIX) // 2 + 1), metavar="N")
    args = parser.parse_args()
    other = args.against.resolve()
    if not (other / "fabfile.py").is_file():
        sys.exit(f"{other} is not a checkout of gangway (no fabfile.py)")
    names = {REPO: "this tree (uv)", other: f"--against {other.name}"}
    walls: dict[Path, list[float]] = {REPO: [], other: []}
    with testhost.start(args.suite) as host, tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "project")
        inventory = Path(tmp) / "bench.yaml"
        write_inventory(host, inventory, app="mysite", domains=(DOMAIN,), source=repo.path,
                        health_check="/healthz/", keep_releases=2 * args.runs + 3)
        inv = ("--inventory", str(inventory))
        print("provisioning a fresh test server...", file=sys.stderr)
        seconds, result = fab("provision", *inv)
        if result.returncode != 0:
            sys.exit(f"fab provision failed:\n{result.stdout}\n{result.stderr}")
        warm_bytecode()
        fab("--list", cwd=other)
        first, _ = deploy(REPO, inv)
        print(f"first deploy, uv's cache empty: {first:.2f} s", file=sys.stderr)
        versions = iter(SIX)
        for i in range(args.runs):
            for tree in ((other, REPO) if i % 2 == 0 else (REPO, other)):
                version = next(versions)
                base = re.sub(r"(?m)^six==.*\n", "", (repo.path / "requirements.txt").read_text())
                repo.commit(f"six {version}", **{"requirements.txt": base + f"six=={version}\n"})
                seconds, _ = deploy(tree, inv)
                walls[tree].append(seconds)
                print(f"run {i + 1}: {names[tree]:<40} six=={version:<8} {seconds:6.2f} s", file=sys.stderr)

    print(f"\nfab deploy with new requirements on Debian {args.suite} (local test server, example app + one new "
          "requirement), interleaved")
    print(f"first deploy with uv's cache empty: {first:.2f} s")
    print(f"{'gangway':<44}{'runs':>5}{'min s':>8}{'median s':>10}{'max s':>8}")
    for tree, times in walls.items():
        print(f"{names[tree]:<44}{len(times):>5}{min(times):>8.2f}{statistics.median(times):>10.2f}"
              f"{max(times):>8.2f}")


if __name__ == "__main__":
    main()
