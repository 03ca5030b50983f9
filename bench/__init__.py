"""Benchmarks of gangway on local throwaway Debian servers (tests/testhost): figures, not pass/fail."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def fab(*args: str, cwd: Path = REPO) -> tuple[float, subprocess.CompletedProcess]:
    """Run `fab ARGS` in this repository (or `cwd`: another checkout of gangway, a project) as a user would:
    the wall time, and what it printed. Python may write and reuse its bytecode cache even where the caller's
    environment forbids it (PYTHONDONTWRITEBYTECODE), as an installed gangway has its bytecode compiled:
    otherwise every run would time compiling gangway anew."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "fabric", *args], cwd=cwd, capture_output=True, text=True,
                            env=env)
    return time.monotonic() - started, result


def warm_bytecode() -> None:
    """Load every task once, so that the first timed run does not pay for writing the bytecode cache."""
    fab("--list")
