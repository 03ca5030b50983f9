"""A beginner's project as `django-admin startproject` writes it (default settings: DEBUG on, a key in the
code, SQLite, no STATIC_ROOT, no requirements file), made with the Django installed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def startproject(directory: Path, name: str = "mysite") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "django", "startproject", name, str(directory)], check=True,
                   capture_output=True)
    return directory
