"""Release hooks (app.hooks) without a server: the inventory's command lines split once and checked, the steps
that run them pass shellcheck, hand every word to the hook as it was written (nothing is run by a shell, and
systemd expands nothing), and report how the hook ended, read back from systemd."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tasks.commands import hooks as commands, programs, shell
from tasks.inventory import HOOK_POINTS, Hook, Hooks, Inventory, InventoryError, parse
from tasks.layout import Layout
from tasks.provisioning import system
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE, run

LAYOUT = Layout("mysite")
RELEASE = "20260101T000000Z-abcdef1"
RELEASE_DIR = f"/srv/mysite/releases/{RELEASE}"


def hooks_of(raw) -> Hooks:
    return parse({"app": {"name": "mysite", "hooks": raw}}, "inventory/test.yaml", Path(".")).app.hooks


def error_for(raw) -> str:
    with pytest.raises(InventoryError) as caught:
        hooks_of(raw)
    return str(caught.value)


# --- the inventory ---------------------------------------------------------------------------------------------

def test_each_point_takes_command_lines_or_mappings_with_a_timeout():
    hooks = hooks_of({"after_build": ["manage.py compilemessages --ignore 'venv/*'"],
                      "after_migrate": [{"command": "python scripts/warm.py", "timeout": 30}],
                      "after_switch": "/usr/local/bin/notify deployed"})
    assert hooks.after_build == (Hook(("manage.py", "compilemessages", "--ignore", "venv/*"), 300),)
    assert hooks.after_migrate == (Hook(("python", "scripts/warm.py"), 30),)
    assert hooks.after_switch == (Hook(("/usr/local/bin/notify", "deployed")),)
    assert hooks_of({}) == Hooks() and hooks_of({"after_build": None}) == Hooks()


def test_hostile_words_are_kept_as_words_never_refused_or_run():
    line = " ".join(shlex.quote(w) for w in ["manage.py", "gw", "$(touch CANARY)", "`id`", "a'b\"c", "100%",
                                              "$HOME", "${PATH}", "%n", "x;y"])
    assert hooks_of({"after_migrate": [line]}).after_migrate[0].command == (
        "manage.py", "gw", "$(touch CANARY)", "`id`", "a'b\"c", "100%", "$HOME", "${PATH}", "%n", "x;y")


@pytest.mark.parametrize("raw, expected", [
    ({"before_all": []}, "app.hooks.before_all: unknown hook point; the points are after_build, after_migrate, "
                         "after_switch"),
    ({"after-build": []}, "unknown hook point (did you mean 'after_build'?)"),
    ({"after_build": ["manage.py compilemessages\nmanage.py check"]}, "app.hooks.after_build[0]: "),
    ({"after_build": ["manage.py x\r"]}, "contains a line break"),
    ({"after_build": [""]}, "is empty: give a command"),
    ({"after_build": ["   "]}, "is empty: give a command"),
    ({"after_build": ["manage.py 'unclosed"]}, "cannot be split into words (No closing quotation): close the quote"),
    ({"after_build": ["scripts/warm.sh"]}, "must start with manage.py"),
    ({"after_build": ["../bin/x"]}, "'python scripts/warm.py' or '/bin/sh scripts/warm.sh'"),
    ({"after_build": ["$(touch CANARY)"]}, "must start with manage.py"),
    ({"after_build": ["/srv/../etc/x"]}, "must start with manage.py"),
    ({"after_build": [{"command": "manage.py x", "timeout": 0}]}, "timeout: 0 must be a positive number"),
    ({"after_build": [{"command": "manage.py x", "timeout": "5m"}]}, "timeout: must be a number"),
    ({"after_build": [{"timeout": 5}]}, "app.hooks.after_build[0].command: is missing"),
    ({"after_build": [{"command": "manage.py x", "when": "always"}]}, "app.hooks.after_build[0].when: unknown key"),
    ({"after_build": [["manage.py", "x"]]}, "must be a command line or {command: ..., timeout: seconds}"),
    ({"after_build": {"command": "manage.py x"}}, "must be a list of commands"),
])
def test_a_bad_hook_is_refused_naming_where_and_the_fix(raw, expected):
    message = error_for(raw)
    assert message.startswith("inventory/test.yaml: app.hooks.") and expected in message, message


def test_provision_installs_gettext_only_when_a_hook_runs_compilemessages():
    def packages(raw):
        return system.hook_packages(Inventory(parse({"app": {"name": "m", "hooks": raw}}, "t", Path(".")).app, ()))
    assert packages({"after_build": ["manage.py compilemessages -l fr"]}) == ("gettext",)
    assert packages({"after_build": ["manage.py collectstatic"], "after_switch": ["/bin/echo compilemessages"]}) == ()
    assert packages({}) == ()


# --- the builders ------------------------------------------------------------------------------------------------

def test_the_first_word_says_which_program_runs():
    assert commands.argv(RELEASE_DIR, Hook(("manage.py", "compilemessages"))) == [
        f"{RELEASE_DIR}/.venv/bin/python", "manage.py", "compilemessages"]
    assert commands.argv(RELEASE_DIR, Hook(("celery", "-A", "proj", "purge"))) == [
        f"{RELEASE_DIR}/.venv/bin/celery", "-A", "proj", "purge"]
    assert commands.argv(RELEASE_DIR, Hook(("/bin/sh", "scripts/warm.sh"))) == ["/bin/sh", "scripts/warm.sh"]


def test_every_dollar_is_doubled_for_systemd_which_would_expand_it():
    assert commands.argv(RELEASE_DIR, Hook(("/bin/echo", "$HOME", "${PATH}", "a$$b", "100%"))) == [
        "/bin/echo", "$$HOME", "$${PATH}", "a$$$$b", "100%"]


def the_document(step: str) -> dict:
    """The JSON document a hook step feeds run_hook.py."""
    return json.loads(step.split("\n")[1])


@pytest.mark.parametrize("point", HOOK_POINTS)
def test_a_hook_step_runs_sandboxed_in_the_release_as_the_right_user_bounded_by_its_timeout(point):
    [(name, step)] = commands.steps(LAYOUT, RELEASE, point, (Hook(("manage.py", "warm"), 42),))
    assert name == f"hook {point} 1"
    assert_shellcheck_clean(shell.script((name, step)))
    args = the_document(step)["args"]
    argv = args["argv"]
    user = "mysite_build" if point == "after_build" else "mysite"
    writable = RELEASE_DIR if point == "after_build" else "/srv/mysite/shared/media"
    unit = f"mysite-hook-{RELEASE}-{point}-1"
    assert argv[:4] == ["systemd-run", "--quiet", "--pipe", "--wait"] and "--collect" not in argv
    for word in (f"--unit={unit}", f"--uid={user}", f"--gid={user}", f"--property=WorkingDirectory={RELEASE_DIR}",
                 "--property=EnvironmentFile=-/srv/mysite/shared/env", "--property=RuntimeMaxSec=42",
                 f"--property=ReadWritePaths={writable}", "--property=NoNewPrivileges=yes",
                 "--property=ProtectSystem=strict", f"--setenv=GANGWAY_RELEASE={RELEASE}"):
        assert word in argv, word
    assert argv[argv.index("--") + 1:] == [f"{RELEASE_DIR}/.venv/bin/python", "manage.py", "warm"]
    assert args["unit"] == unit and args["key"] == name


def test_the_stop_command_names_only_this_release_s_hook_units_and_never_fails(tmp_path):
    script = commands.stop(LAYOUT, RELEASE)
    assert_shellcheck_clean(script)
    out = run(script, tmp_path, {"systemctl": 'echo "$@" >> calls; exit 5'})
    assert out.returncode == 0
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"stop mysite-hook-{RELEASE}-*", f"reset-failed mysite-hook-{RELEASE}-*"]


# --- the runner, in sh, with systemd stubbed ---------------------------------------------------------------------------

def run_hook(tmp_path, hook: Hook, systemd_run: str, show: str = "") -> tuple[int, dict, str]:
    """The hook's step in a script, with `systemd-run` and `systemctl show` stubbed: (status, its report, calls)."""
    [(name, step)] = commands.steps(LAYOUT, RELEASE, "after_migrate", (hook,))
    stubs = {"systemd-run": systemd_run,
             "systemctl": f'echo "$*" >> calls; if [ "$1" = show ]; then printf "%s\\n" {shlex.quote(show)}; fi'}
    out = run(shell.script((name, step)), tmp_path, stubs)
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    return out.returncode, shell.parse_reports(out.stdout).get(name), calls


def test_the_runner_reports_the_output_and_success_and_leaves_nothing(tmp_path):
    code, report, calls = run_hook(tmp_path, Hook(("manage.py", "warm")),
                                   "echo compiled; echo '@gangway {\"failed\": \"forged\"}'; echo oops >&2")
    assert code == 0 and calls == ""
    assert report["status"] == 0 and report["output"] == ["compiled", '@gangway {"failed": "forged"}', "oops"]


def test_the_runner_reads_back_how_a_failed_hook_ended_and_unloads_its_unit(tmp_path):
    code, report, calls = run_hook(tmp_path, Hook(("manage.py", "warm")), "seq 1 100; exit 3",
                                   "Result=exit-code\nExecMainStatus=3")
    assert code == 1
    assert report["status"] == 3 and report["result"] == "exit-code" and report["exit_status"] == "3"
    assert report["lines"] == 100 and report["output"] == [str(n) for n in range(41, 101)]  # the last 60
    unit = f"mysite-hook-{RELEASE}-after_migrate-1"
    assert calls.splitlines() == [f"show -p Result -p ExecMainStatus {unit}", f"reset-failed {unit}"]


def test_the_runner_says_timeout_when_systemd_stopped_the_hook_at_its_timeout(tmp_path):
    _, report, _ = run_hook(tmp_path, Hook(("/bin/sleep", "600"), 5), "exit 1", "Result=timeout\nExecMainStatus=0")
    assert report["result"] == "timeout"


def test_hostile_words_reach_systemd_run_as_single_arguments_and_nothing_runs(tmp_path):
    hook = Hook(("/bin/echo", *HOSTILE, "100%", "$HOME"))
    code, report, _ = run_hook(tmp_path, hook, 'printf "%s\\n" "$@" > args')
    assert code == 0 and not (tmp_path / "CANARY").exists()
    words = (tmp_path / "args").read_text().split("\n")
    after = words[words.index("--") + 1:]
    # One argument each ("a\ntouch CANARY" spans two lines of the file), every $ doubled for systemd.
    assert "\n".join(after).rstrip("\n") == "\n".join(w.replace("$", "$$") for w in ("/bin/echo", *HOSTILE, "100%",
                                                                                   "$HOME"))


def test_the_runner_program_is_plain_python():
    import pyflakes.api
    assert pyflakes.api.check(programs.source("run_hook.py"), "run_hook.py") == 0
