"""Installed like a library: `pip install` gives the package `gangway`, and a project's two-line fabfile uses it."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.installed import REPO, environment, install

FABFILE = "from gangway.collection import namespace_for\nnamespace = namespace_for(__file__)\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtualenv with this repository pip-installed (Fabric and the rest come from the test environment)."""
    return install(tmp_path_factory.mktemp("installed"))


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=environment(bin_dir), timeout=120)


def test_the_package_is_gangway_with_its_templates(installed, tmp_path):
    script = ("import gangway.commands.render as r, gangway.cli.deploy as d; "
              "print(r.TEMPLATES.parent.name, r.TEMPLATES.is_dir(), d.CHECK_SCRIPT.is_file())")
    result = run(installed, str(installed / "python"), "-c", script, cwd=tmp_path)
    assert result.stdout.split() == ["gangway", "True", "True"], result.stderr
    # It is the installed copy, not this checkout, that answered.
    assert "tasks" not in run(installed, str(installed / "python"), "-c", "import gangway; print(gangway.__file__)",
                              cwd=tmp_path).stdout


def test_a_projects_two_line_fabfile_lists_the_tasks_and_reads_deploy(installed, tmp_path):
    (tmp_path / "fabfile.py").write_text(FABFILE)
    fab = (str(installed / "python"), "-m", "fabric")  # `fab`, as the installed Fabric runs it
    listed = run(installed, *fab, "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("provision", "deploy", "rollback", "releases"):
        assert f"  {name}" in listed.stdout
    # With no inventory yet, the error names the project's deploy/production.yaml and the way to write it.
    missing = run(installed, *fab, "releases", cwd=tmp_path)
    assert missing.returncode != 0
    assert "deploy/production.yaml" in missing.stderr + missing.stdout and "fab init" in missing.stderr + missing.stdout


def test_the_gangway_command_runs_the_tasks_without_a_fabfile(installed, tmp_path):
    for command in ([str(installed / "gangway"), "--list"], [str(installed / "python"), "-m", "gangway", "--list"]):
        result = run(installed, *command, cwd=tmp_path)
        assert result.returncode == 0 and "  deploy" in result.stdout, result.stderr


def test_this_repository_keeps_its_own_fabfile():
    result = subprocess.run([sys.executable, "-m", "fabric", "--list"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "  provision" in result.stdout, result.stderr
