"""Loading the tasks is cheap: `fab --list` and `fab --help TASK` import no step of any task.

Every `fab` run loads the fabfile, so an import at the top of a module it reaches is paid by every command,
`fab --list` included. The steps, and what they need (Jinja2, the inventory's schema, SSH sessions, Django
project readers), are imported by the task that runs them. Which modules load is what is checked, not time.
"""

import json
import subprocess
import sys

from tests.installed import REPO

# What loading the collection may import of gangway: the tasks' faces, their defaults, and the executor that
# `fab manage -- ARGS` needs before any task runs.
ALLOWED = {"tasks", "tasks.collection", "tasks.defaults", "tasks.cli", "tasks.cli.executor"}

# Run `fab` in-process on this repository's fabfile, as the `fab` command does, then name what it imported.
PROGRAM = """
import json, sys
from fabric.main import program
for argv in (["fab", "--list"], ["fab", "--help", "deploy"]):
    try:
        program.run(argv)
    except SystemExit as done:
        assert not done.code, done.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded() -> tuple[str, set[str]]:
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout, set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_listing_the_tasks_imports_none_of_their_steps():
    out, modules = loaded()
    assert "  deploy " in out and "--allow-unsafe-migrations" in out  # the list, then deploy's help
    gangway = {name for name in modules if name == "tasks" or name.startswith("tasks.")}
    assert gangway <= ALLOWED, f"imported when only listing the tasks: {sorted(gangway - ALLOWED)}"
    # Named, so that the failure says what crept back: the templates (Jinja2), the inventory's schema, SSH
    # sessions, the steps of the biggest tasks, and the local Django project's readers (sqlite3, tarfile).
    for heavy in ("jinja2", "tasks.commands.render", "tasks.inventory", "tasks.connection.targets",
                  "tasks.session.run", "tasks.cli.deploy", "tasks.cli.status", "tasks.project.django",
                  "sqlite3", "tarfile"):
        assert heavy not in modules, heavy
