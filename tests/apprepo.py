"""A user's project for tests and benchmarks: a git repository holding a copy of example/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class AppRepo:
    """The user's project: a git repository holding a copy of example/."""

    def __init__(self, path: Path):
        self.path = path
        shutil.copytree(REPO / "example", path, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3",
                                                                             "static", "media"))
        shutil.copytree(REPO / "example" / "counter" / "static", path / "counter" / "static", dirs_exist_ok=True)
        self.git("init", "-q")
        self.commit("the example app")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@app.test", *args],
                              cwd=self.path, check=True, capture_output=True, text=True).stdout.strip()

    def write(self, relative: str, content: str) -> None:
        (self.path / relative).write_text(content)

    def commit(self, message: str, **files: str) -> str:
        for relative, content in files.items():
            self.write(relative.replace("__", "/"), content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def set_version(self, version: str) -> str:
        return self.commit(f"version {version}", **{"mysite__version.py": f'VERSION = "{version}"\n'})

    def reset(self, commit: str) -> None:
        self.git("reset", "-q", "--hard", commit)
