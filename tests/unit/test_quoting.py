"""Shell quoting lives in one place (README, Hostile values stay values): tasks/commands/shell.py. Every other module
quotes for the shell through its `q` and `join`, never with shlex directly (shlex.split, which parses what
the operator typed, is not quoting)."""

from __future__ import annotations

import re
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def test_only_tasks_commands_shell_quotes_for_the_shell():
    quoting = re.compile(r"\bshlex\.(quote|join)\b|\bpipes\.quote\b|from shlex import")
    found = [f"{path.relative_to(TASKS.parent)}:{number}" for path in sorted(TASKS.rglob("*.py"))
             if path != TASKS / "commands" / "shell.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if quoting.search(line)]
    assert found == []
