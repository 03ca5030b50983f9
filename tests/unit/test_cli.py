"""The command line as users meet it: fab --list, --help, and errors without a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def fab(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_list_shows_every_task_with_a_description():
    out = fab("--list").stdout
    for task in ("provision", "deploy", "rollback", "releases", "unlock"):
        line = next(line for line in out.splitlines() if line.strip().startswith(task + " "))
        assert len(line.split(None, 1)[1]) > 20, line


def test_every_task_has_help_for_its_options():
    assert "--ref" in fab("--help", "deploy").stdout and "--allow-dirty" in fab("--help", "deploy").stdout
    assert "--migrate-back" in fab("--help", "rollback").stdout and "--to" in fab("--help", "rollback").stdout
    assert "--inventory" in fab("--help", "provision").stdout


def test_a_broken_inventory_is_one_clear_line_not_a_traceback(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("app:\n  name: mysite\n  domians: [example.com]\nhosts: [{address: 192.0.2.1}]\n")
    out = fab("provision", "--inventory", str(broken))
    assert out.returncode == 1
    assert "app.domians: unknown key; did you mean 'domains'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_inventory_at_all_says_how_to_start(tmp_path):
    out = fab("deploy", "--inventory", str(tmp_path / "missing.yaml"))
    assert out.returncode == 1 and "no such inventory file" in out.stderr and "Traceback" not in out.stderr


def test_an_unreachable_server_names_the_address_and_port(tmp_path):
    import paramiko
    key = tmp_path / "id_test"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(key))
    out = fab("-H", "root@127.0.0.1:1", "-i", str(key), "provision")  # loopback, a port nothing listens on
    assert out.returncode == 1
    assert "127.0.0.1 port 1: cannot connect" in out.stderr and "Traceback" not in out.stderr


def test_deploying_a_directory_that_is_not_a_django_project_says_so(tmp_path):
    inventory = tmp_path / "x.yaml"
    inventory.write_text(f"app: {{name: mysite, source: {tmp_path}}}\nhosts: [{{address: 127.0.0.1, port: 1}}]\n")
    out = fab("deploy", "--inventory", str(inventory))
    assert out.returncode == 1 and "has no manage.py" in out.stderr


@pytest.mark.parametrize("args", [
    ["logs", "--lines", "2; x"], ["logs", "--lines", "-3"], ["logs", "--since", "$(reboot)"],
    ["logs", "--level", "loud"], ["logs", "--grep", ""], ["logs", "--nginx", "--since", "today"],
    ["maintenance", "sideways"], ["restore", "../etc/passwd"], ["config", "--set", "NOVALUE"],
    ["config", "--set", "PATH=/tmp"], ["config", "--unset", "1BAD"], ["manage"],
], ids=lambda a: " ".join(a))
def test_a_bad_option_value_is_a_sentence_before_any_connection_not_a_traceback(args):
    done = fab(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith(args[0] + ":"), done.stderr
