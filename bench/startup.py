"""Benchmark what gangway adds to every `fab` command: `fab --list` against `fab --version`, in one run:

    python3 -m bench.startup [--runs 40] [--project DIR]

`fab --version` loads Fabric (and with it invoke, paramiko, YAML) but no fabfile; `fab --list` loads the fabfile
too, so the difference is what loading gangway's tasks costs, which every command pays. The two run in turns
(--version, --list, --version, ...) so that a machine whose speed drifts slows both alike, with the bytecode
cache on as an installed gangway has it; the ratio is taken pair by pair. DIR is a project with gangway's
two-line fabfile (default: this repository, whose fabfile loads the same collection). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import resource
import statistics
from pathlib import Path

from bench import REPO, fab


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """One `fab ARGS` in `cwd`: wall seconds and CPU seconds (user + system) of the finished process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, result = fab(*args, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"fab {' '.join(args)} failed in {cwd}:\n{result.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def spread(values: list[float], unit: str = " s") -> str:
    return (f"{min(values):7.3f}{unit} {statistics.median(values):7.3f}{unit} {max(values):7.3f}{unit}"
            f"   (min / median / max)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="pairs of runs (default 40)")
    parser.add_argument("--project", type=Path, default=REPO, help="where to run fab (default: this repository)")
    options = parser.parse_args()
    runs = max(1, min(options.runs, 500))  # bounded: every run is a process start on a shared machine
    for args in (["--version"], ["--list"]):  # unmeasured: the bytecode cache is written, the files are read
        timed(args, options.project)
    version, listing = [], []
    for _ in range(runs):
        version.append(timed(["--version"], options.project))
        listing.append(timed(["--list"], options.project))
    print(f"fab --list against fab --version in {options.project}, {runs} pairs run in turns")
    for kind, index in (("wall", 0), ("cpu", 1)):
        print(f"  fab --version {kind:>4}: {spread([run[index] for run in version])}")
        print(f"  fab --list    {kind:>4}: {spread([run[index] for run in listing])}")
        ratios = [listed[index] / shown[index] for listed, shown in zip(listing, version) if shown[index] > 0]
        print(f"  ratio         {kind:>4}: {spread(ratios, 'x')}")


if __name__ == "__main__":
    main()
