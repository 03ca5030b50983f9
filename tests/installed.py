"""This repository pip-installed into a fresh virtualenv, as a user installs it into their project's: the tests
that run `gangway` or a project's two-line fabfile use the installed package, never this checkout."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def install(root: Path) -> Path:
    """A virtualenv at ROOT/venv holding gangway (Fabric, Django and the rest come from the test environment);
    returns its bin directory."""
    venv.create(root / "venv", with_pip=True, system_site_packages=True)
    python = root / "venv" / "bin" / "python"
    result = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
                            capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "venv" / "bin"


def environment(bin_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell with the virtualenv at BIN_DIR activated (and no PYTHONPATH into this checkout)."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(bin_dir.parent),
           **extra}
    env.pop("PYTHONPATH", None)
    return env
