"""`fab manage` and `fab config` without a server: the words after -- reach the manage task as typed, the
scripts pass shellcheck and keep hostile values inert, the app's variables survive systemd's file syntax."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fabric
import pytest
from fabric.main import Fab
from invoke import Context

from tasks.cli import executor as gangway_executor, operate
from tasks.commands import release as commands, shell
from tasks import collection
from tasks.collection import namespace_for
from tasks.layout import Layout
from tasks.session import run as session_run
from tasks.facts.releases import GOOD, Release
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE, run

LAYOUT = Layout("mysite")
RELEASE = Release("20260101T000000Z-abcdef1", GOOD, commit="abcdef1" + "0" * 33, requirements="h1")
REPO = Path(__file__).resolve().parents[2]


# --- the words after -- -------------------------------------------------------------------------------------------

def test_the_words_after_the_first_double_dash_keep_their_quoting():
    argv = ["fab", "manage", "--", "shell", "-c", "print('a b')", "--", "x"]
    assert gangway_executor.remainder_argv("shell -c print('a b') -- x", argv) == argv[3:]


def test_a_remainder_not_from_this_command_line_is_split_like_a_shell():
    assert gangway_executor.remainder_argv("loaddata 'my posts.json'", ["python"]) == ["loaddata", "my posts.json"]


class _Core(list):
    """What invoke hands an executor: the parsed core arguments (-H) and the remainder after --."""

    def __init__(self, remainder: str, hosts: str | None = None):
        from invoke.parser import Argument, ParserContext
        context = ParserContext(args=[Argument("hosts")])
        context.args.hosts.value = hosts
        super().__init__([context])
        self.remainder = remainder


def _expand(remainder: str, *tasks, hosts: str | None = None) -> list:
    namespace = namespace_for(REPO / "fabfile.py", inventory_dir="inventory")
    core = _Core(remainder, hosts)
    executor = gangway_executor.Executor(namespace, core=core)
    calls = executor.expand_calls(executor.normalize(tasks))
    assert core.remainder == remainder  # left as it was
    return calls


def test_the_manage_task_gets_the_remainder_instead_of_an_anonymous_shell_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["fab", "manage", "--", "createsuperuser", "--email", "a b@x"])
    calls = _expand("createsuperuser --email a b@x", "manage")
    assert [c.task.name for c in calls] == ["manage"]
    assert calls[0].kwargs["args"] == ["createsuperuser", "--email", "a b@x"]
    with_hosts = _expand("createsuperuser --email a b@x", "manage", hosts="deploy@h1,deploy@h2")
    assert [c.kwargs["args"][-1] for c in with_hosts] == ["a b@x", "a b@x"]


def test_without_the_manage_task_the_remainder_is_fabric_s_as_always():
    calls = _expand("uptime", hosts="root@h1,root@h2")
    assert [c.task.body.__name__ for c in calls] == ["anonymous", "anonymous"]
    with pytest.raises(fabric.exceptions.NothingToDo):
        _expand("uptime", "releases")


def test_fab_and_gangway_use_the_executor(monkeypatch):
    import fabric.main
    program = Fab(executor_class=fabric.Executor)
    monkeypatch.setattr(fabric.main, "program", program)
    namespace_for(REPO / "fabfile.py")
    assert program.executor_class is gangway_executor.Executor
    mine = Fab(executor_class=fabric.Executor)
    mine.executor_class = type("Custom", (fabric.Executor,), {})
    monkeypatch.setattr(fabric.main, "program", mine)
    namespace_for(REPO / "fabfile.py")
    assert mine.executor_class.__name__ == "Custom"  # a program's own choice stays


@pytest.mark.parametrize("program", [["fabric"], ["tasks"]], ids=["fab", "gangway"])
def test_manage_without_hosts_reaches_the_task_not_fabric_s_refusal(tmp_path, program):
    out = subprocess.run([sys.executable, "-m", *program, "manage", "--inventory", str(tmp_path / "none.yaml"),
                          "--", "shell", "-c", "print(1)"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "NothingToDo" not in out.stderr, out.stderr
    assert "manage failed" in out.stderr + out.stdout


def test_the_manage_task_is_callable_from_python_with_a_list(monkeypatch):
    seen = []
    monkeypatch.setattr(session_run, "run_task", lambda c, inv, task, action, verbose: seen.append((task, action)))
    collection.manage(Context(), args=["loaddata", "my posts.json"])
    assert len(seen) == 1 and seen[0][0].lock == "manage loaddata"
    collection.manage(Context(), args=["showmigrations"])
    assert seen[1][0].lock is None  # a command that only reads takes no lock
    with pytest.raises(Exception, match="say which command"):
        collection.manage(Context())


def test_an_argument_naming_the_local_file_becomes_the_uploaded_path():
    assert operate.with_upload(["loaddata", "posts.json", "--app", "posts.json.bak"], "posts.json",
                               "/srv/x/releases/.upload-1-posts.json") == \
        ["loaddata", "/srv/x/releases/.upload-1-posts.json", "--app", "posts.json.bak"]


# --- the scripts --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [
    commands.manage_live(LAYOUT, RELEASE.id, "mysite", ["createsuperuser"], "mysite-manage-1", terminal=True),
    commands.manage_live(LAYOUT, RELEASE.id, "mysite", ["loaddata", "/srv/mysite/releases/.upload-1-p.json"],
                         "mysite-manage-1", upload="/srv/mysite/releases/.upload-1-p.json"),
    commands.private_upload(LAYOUT.upload("ab12", "config.env")),
    shell.script(commands.config_install(LAYOUT, LAYOUT.upload("ab12", "config.env"))),
    shell.script(commands.config_restore(LAYOUT), commands.config_kept(LAYOUT)),
    shell.script(commands.clone_release(LAYOUT, "20251231T000000Z-abcdef1", RELEASE)),
    *[probe.command for probe in commands.config_probes(LAYOUT)],
], ids=["manage (terminal)", "manage (upload)", "upload", "config install", "config restore", "clone",
        "config probe", "unit probe"])
def test_every_operate_script_passes_shellcheck(script):
    assert_shellcheck_clean(script)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_management_argument_is_one_argument_of_the_command(tmp_path, value):
    script = commands.manage_live(LAYOUT, RELEASE.id, "mysite", ["shell", "-c", value], "mysite-manage-1",
                                  upload=str(tmp_path / "up"))
    (tmp_path / "up").write_text("x")
    out = run(script, tmp_path, {"systemd-run": 'printf "%s\\n" "$@" > args; exit 7', "chown": "true"})
    assert out.returncode == 7 and not (tmp_path / "CANARY").exists()
    assert not (tmp_path / "up").exists()  # removed, whatever the command's status
    args = (tmp_path / "args").read_text()
    assert args.endswith(f"manage.py\nshell\n-c\n{value}\n")
    assert f"--property=EnvironmentFile=-{LAYOUT.config_env}" in args and "--uid=mysite" in args
    assert f"--property=ReadWritePaths={LAYOUT.media}" in args and "--pipe" in args


def test_an_interactive_command_gets_a_terminal_instead_of_a_pipe():
    script = commands.manage_live(LAYOUT, RELEASE.id, "mysite", ["createsuperuser"], "u", terminal=True)
    assert "--pty" in script and "--pipe" not in script


def _local(layout_root: Path) -> Layout:
    class Local(Layout):
        @property
        def shared(self) -> str:
            return str(layout_root)
    return Local("mysite")


def test_a_new_config_file_replaces_the_old_one_which_comes_back_on_restore(tmp_path):
    layout = _local(tmp_path)
    Path(layout.config_env).write_text("OLD=\"1\"\n")
    upload = tmp_path / "up"
    upload.write_text("NEW=\"2\"\n")
    stubs = {"install": 'cp "$7" "$8"'}  # install -m 600 -o root -g root SRC DEST
    assert run(shell.script(commands.config_install(layout, str(upload))), tmp_path, stubs).returncode == 0
    assert Path(layout.config_env).read_text() == "NEW=\"2\"\n" and not upload.exists()
    assert run(shell.script(commands.config_restore(layout)), tmp_path).returncode == 0
    assert Path(layout.config_env).read_text() == "OLD=\"1\"\n"


def test_restoring_when_there_was_no_config_file_removes_the_new_one(tmp_path):
    layout = _local(tmp_path)
    upload = tmp_path / "up"
    upload.write_text("NEW=\"2\"\n")
    run(shell.script(commands.config_install(layout, str(upload))), tmp_path, {"install": 'cp "$7" "$8"'})
    assert Path(layout.config_env).exists()
    run(shell.script(commands.config_restore(layout)), tmp_path)
    assert not Path(layout.config_env).exists()


def test_a_failed_install_leaves_neither_the_upload_nor_a_half_file(tmp_path):
    layout = _local(tmp_path)
    upload = tmp_path / "up"
    upload.write_text("SECRET=\"x\"\n")
    out = run(shell.script(commands.config_install(layout, str(upload))), tmp_path, {"install": "exit 1"})
    assert out.returncode != 0 and not upload.exists() and not Path(layout.config_env).exists()


# --- the app's variables ------------------------------------------------------------------------------------------

VALUES = ["plain", "it's \"quoted\"", "$(touch CANARY) `id` $HOME ${X}", "back\\slash\\", "  spaces  ", "",
          "caf\u00e9 = \u2603", "#not a comment", "a=b=c"]


def test_values_survive_the_file_both_ways():
    variables = {f"V{i}": value for i, value in enumerate(VALUES)}
    assert operate.parse_config(operate.encode_config(variables)) == variables


@pytest.mark.parametrize("item, problem", [
    ("NOEQUALS", "give NAME=VALUE"), ("1BAD=x", "not a usable"), ("DATABASE_URL=x", "set by gangway"),
    ("A=line\nbreak", "line break"), ("A=tab\there", "control character"),
])
def test_a_bad_setting_is_refused_with_the_reason(item, problem):
    with pytest.raises(ValueError, match=problem):
        operate.parse_changes([item], [])


def test_set_and_unset_together_are_parsed():
    assert operate.parse_changes(["A=1", "B=x=y"], ["C"]) == ({"A": "1", "B": "x=y"}, ["C"])
    with pytest.raises(ValueError, match="both set and unset"):
        operate.parse_changes(["A=1"], ["A"])
    with pytest.raises(ValueError, match="not a usable"):
        operate.parse_changes([], ["no-dash"])


# --- the environment file -----------------------------------------------------------------------------------------

def _env_layout(tmp_path: Path) -> Layout:
    class Local(Layout):
        @property
        def env_file(self) -> str:
            return str(tmp_path / "env")
    return Local("mysite")


def test_a_name_taken_out_of_the_inventory_leaves_the_env_file_and_the_operator_s_lines_stay(tmp_path):
    layout = _env_layout(tmp_path)
    env = tmp_path / "env"
    env.write_text("OPERATOR='mine'\n")
    subprocess.run(["sh", "-c", commands.env_file(layout, {"DJANGO_DB_NAME": "m", "NOTE": "hi"})], check=True)
    first = env.read_text()
    assert 'NOTE="hi"' in first and "OPERATOR='mine'" in first and "DJANGO_SECRET_KEY=" in first
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    subprocess.run(["sh", "-c", commands.env_file(layout, {"DJANGO_DB_NAME": "m"})], check=True)
    second = env.read_text()
    assert "NOTE" not in second.replace(commands.ENV_FILE_MARK, "").split("\n", 1)[1]
    assert "OPERATOR='mine'" in second and 'DJANGO_DB_NAME="m"' in second
    key = [line for line in first.splitlines() if line.startswith("DJANGO_SECRET_KEY=")]
    assert key and key[0] in second  # the secret key is kept


def test_the_inventory_env_is_part_of_what_gangway_manages():
    from tasks.cli.deploy import _managed_environment
    from tasks.inventory import App, Host, Inventory

    class FakeSession:
        inventory = Inventory(App("mysite", env=(("SENTRY_ENVIRONMENT", "production"),)), (Host("10.0.0.2"),))
        host = inventory.hosts[0]
        layout = LAYOUT

    assert _managed_environment(FakeSession())["SENTRY_ENVIRONMENT"] == "production"


def test_the_unit_template_reads_the_app_s_own_variables_after_the_env_file():
    text = (REPO / "templates" / "systemd" / "app@.service.j2").read_text()
    assert text.index("EnvironmentFile=-{{ env_file }}") < text.index("EnvironmentFile=-{{ config_env }}")


def test_the_collection_has_the_new_tasks():
    names = set(namespace_for(REPO / "fabfile.py").task_names)
    assert {"manage", "config", "import-data"} <= names
