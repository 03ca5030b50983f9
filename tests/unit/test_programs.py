"""Server programs are files, checked here, and run with their arguments as data."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyflakes import checker

from tasks.commands import programs, shell
from tasks.commands.render import TEMPLATES

HOSTILE = "$(touch pwned) `touch pwned` ' \" \\ \n; rm -rf / #"
# The names project.check_program defines in front of release_check.py (it is run assembled).
ASSEMBLED = {"release_check.py": {"readiness", "readiness_facts", "known_migrations"},
             "env_file.py": {"split_line", "service_values"}, "env_sizes.py": {"parse"},
             "env_services.py": {"parse", "service_values"}, "redis_ping.py": {"parse", "redis_password"},
             "media_store.py": {"media_keys"}}
SHIPPED = sorted([*TEMPLATES.glob("programs/*.py"), *TEMPLATES.glob("deploy/*.py"), *TEMPLATES.glob("backups/*.py")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_program_passes_pyflakes(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    found = checker.Checker(tree, filename=str(path), builtins=ASSEMBLED.get(path.name, set())).messages
    assert not found, "\n".join(str(message) for message in found)


def test_a_program_gets_hostile_arguments_exactly_and_nothing_runs(tmp_path):
    echo = "import json, sys\nprint('@gangway ' + json.dumps({'seen': json.load(sys.stdin)}))\n"
    script = shell.script(("echo", programs.python("echo.py", {"value": HOSTILE, "list": [HOSTILE]}, text=echo)))
    out = subprocess.run(["sh"], input=script, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert shell.parse_reports(out.stdout)["seen"] == {"value": HOSTILE, "list": [HOSTILE]}
    assert not (tmp_path / "pwned").exists()


def test_a_program_of_200_kb_runs_from_a_script_on_standard_input(tmp_path):
    big = "# " + "x" * 200_000 + "\nimport json\nprint('@gangway ' + json.dumps({'ran': True}))\n"
    script = shell.script(("big", programs.python("big.py", {}, text=big)))
    out = subprocess.run(["sh"], input=script, capture_output=True, text=True)
    assert out.returncode == 0 and shell.parse_reports(out.stdout)["ran"] is True, out.stderr


def test_prune_static_removes_only_what_no_kept_release_has(tmp_path):
    root, kept = tmp_path / "static", tmp_path / "r1" / "static"
    for path in (root / "css" / "a.css", root / "old.js", kept / "css" / "a.css"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    out = subprocess.run([sys.executable, str(programs.PROGRAMS / "prune_static.py")],
                         input=json.dumps({"root": str(root), "releases": [str(kept)]}),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert shell.parse_reports(out.stdout) == {"static_removed": 1}
    assert (root / "css" / "a.css").exists() and not (root / "old.js").exists()
