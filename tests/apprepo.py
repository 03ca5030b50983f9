"""A user's project for tests and benchmarks: a git repository holding a copy of example/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# `manage.py gw_worker`, a database-backed worker (AppRepo.write_worker): it polls counter_hit for rows queued as
# "/todo/" and marks each done with its code's VERSION and its release; `--beat` is a scheduler-like singleton.
WORKER = '''import os
import signal
import sys
import time

from django.core.management.base import BaseCommand

from counter.models import Hit

VERSION = "{version}"


class Command(BaseCommand):
    help = "A database-backed worker, for gangway's tests."

    def add_arguments(self, parser):
        parser.add_argument("--beat", action="store_true")

    def handle(self, *args, beat, **options):
        {crash}
        release = os.environ["GANGWAY_RELEASE"]

        def stop(*_):
            if beat:
                Hit.objects.create(path=f"/beat-stop/{{release}}")
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        if beat:
            Hit.objects.create(path=f"/beat-start/{{release}}")
        while True:
            if not beat:
                for hit in Hit.objects.filter(path="/todo/"):
                    hit.path = f"/done/{{VERSION}}/{{release}}"
                    hit.save()
            time.sleep(0.3)
'''


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

    def write_worker(self, version: str, crash: bool = False) -> str:
        """Add (or change) `manage.py gw_worker` (WORKER) and commit it; with `crash`, it fails at start."""
        (self.path / "counter/management/commands").mkdir(parents=True, exist_ok=True)
        self.write("counter/management/__init__.py", "")
        self.write("counter/management/commands/__init__.py", "")
        self.write("counter/management/commands/gw_worker.py", WORKER.format(
            version=version, crash='raise RuntimeError("gw-worker-crash at start")' if crash else "pass"))
        return self.commit(f"worker {version}{' crashing' if crash else ''}")
