"""Release hooks (app.hooks) in a deploy, against the fake server: every branch says what the server shows
afterwards (which release is live, read back), names the hook, its point, how it ended and its last lines."""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile

import pytest

from tasks.cli import deploy
from tasks.inventory import App, Hook, Hooks, Host, Inventory
from tasks.session.run import DeployError
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
NEW = ["notes.0001_initial"]
WITH_TAG = ["notes.0001_initial", "notes.0002_tag"]


def inventory(**points) -> Inventory:
    hooks = Hooks(**{point: tuple(Hook(tuple(c.split()), 5) if isinstance(c, str) else c for c in commands)
                     for point, commands in points.items()})
    return Inventory(App("mysite", hooks=hooks), (Host("10.0.0.2"),))


def a_server(inv: Inventory, applied=NEW) -> fake.FakeRemote:
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, NEW), applied=applied, inventory=inv))
    return remote.on("checks", report={"migrations": WITH_TAG, "venv": "reused", "warnings": []}) \
                 .on("backup", report={"backup": "/srv/mysite/backups/x.dump"})


def ran(step: str, status: int = 0, output=(), **more) -> dict:
    """The report run_hook.py prints for the hook whose step is `step`."""
    return {step: {"status": status, "seconds": 0.4, "output": list(output), "lines": len(output), **more}}


def deploy_with(remote: fake.FakeRemote, inv: Inventory) -> tuple[str, str]:
    """(the deploy's message, its output): the message is the release id when it succeeded."""
    out = io.StringIO()
    try:
        result = deploy.deploy_to(fake.session(remote, inv, out=out), fake.a_source())
    except DeployError as error:
        result = str(error)
    return result, out.getvalue()


def script_with(remote: fake.FakeRemote, step: str) -> str:
    return next(s for s in remote.scripts if step in fake.steps_of(s))


# --- hooks that succeed ----------------------------------------------------------------------------------------

def test_hooks_run_at_their_points_and_their_output_and_steps_are_shown():
    inv = inventory(after_build=["manage.py compilemessages"], after_migrate=["manage.py warm_cache"],
                    after_switch=["manage.py update_index", "/bin/true"])
    remote = a_server(inv)
    remote.on("hook after_build 1", report=ran("hook after_build 1", output=["processing file django.po in "
                                                                              "locale/fr/LC_MESSAGES\x1b[2J"]))
    remote.on("hook after_migrate 1", report=ran("hook after_migrate 1", output=["warmed 12 keys"]))
    remote.on("hook after_switch 1", report=ran("hook after_switch 1", output=["indexed 3"]))
    remote.on("hook after_switch 2", report=ran("hook after_switch 2"))
    remote.then_facts(applied=WITH_TAG)
    release_id, text = deploy_with(remote, inv)
    assert release_id.endswith("-abcdef1"), release_id
    build = script_with(remote, "hook after_build 1")
    assert fake.steps_of(build).index("pip") < fake.steps_of(build).index("hook after_build 1") \
        < fake.steps_of(build).index("checks")
    assert "  | processing file django.po in locale/fr/LC_MESSAGES\\x1b[2J" in text  # escaped for the terminal
    assert ("changed   hook after_build: `manage.py compilemessages` ran in 0.4 s, as the build user, before "
            "Django's checks") in text
    assert "changed   hook after_migrate: `manage.py warm_cache` ran in 0.4 s, as the app user" in text
    assert "changed   hook after_switch: `manage.py update_index` ran in 0.4 s, as the app user, after the switch" \
        in text
    order = [text.index(s) for s in ("hook after_build", "migrations", "hook after_migrate", "switch",
                                     "hook after_switch: `manage.py update_index`", "hook after_switch: `/bin/true`")]
    assert order == sorted(order), text
    # after_migrate runs before the switch, in a round trip of its own; after_switch after it.
    scripts = [fake.steps_of(s) for s in remote.scripts]
    assert scripts.index(["hook after_migrate 1"]) < next(i for i, s in enumerate(scripts) if "switch" in s) \
        < scripts.index(["hook after_switch 1", "hook after_switch 2"])


def test_a_deploy_without_hooks_sends_no_hook_step():
    remote = a_server(fake.default_inventory())
    remote.then_facts(applied=WITH_TAG)
    deploy_with(remote, fake.default_inventory())
    assert not any(step.startswith("hook ") for s in remote.scripts for step in fake.steps_of(s))
    assert not remote.sent("run_hook.py")


# --- failures before the switch ------------------------------------------------------------------------------------

def test_an_after_build_hook_that_fails_stops_the_deploy_before_the_checks_with_the_live_release_serving():
    inv = inventory(after_build=["manage.py compilemessages"])
    remote = a_server(inv)
    remote.on("hook after_build 1", ok=False, report=ran(
        "hook after_build 1", 1, ["CommandError: Can't find msgfmt. Make sure you have GNU gettext tools 0.15 or "
                                  "newer installed."], result="exit-code", exit_status="1"))
    message, text = deploy_with(remote, inv)
    assert ("the after_build hook, `manage.py compilemessages`, failed with exit status 1; the last lines of its "
            "output:\nCommandError: Can't find msgfmt") in message
    assert "`fab provision` installs the gettext package when a hook runs compilemessages" in message
    assert f"{LIVE} is still serving (read back: the live link points at its socket)" in message
    assert "kept in /srv/mysite/failed/" in message
    assert "FAILED    hook after_build: `manage.py compilemessages` failed with exit status 1" in text
    assert remote.ran("set aside") and not remote.ran("backup") and not remote.ran("migrate")
    assert not remote.ran("switch") and "checks" not in remote.rules[0].step
    assert text.index("FAILED    hook after_build") < text.index("FAILED    release")


def test_an_after_migrate_hook_that_fails_reverses_the_migrations_and_leaves_the_live_release_serving():
    inv = inventory(after_migrate=["manage.py warm_cache --all"])
    remote = a_server(inv)
    remote.on("hook after_migrate 1", ok=False, report=ran(
        "hook after_migrate 1", 3, [f"line {n}" for n in range(40)], result="exit-code", exit_status="3"))
    remote.on("reverse", report={"reverse_plan": ["notes.0002_tag"], "unapplied": "notes.0002_tag"})
    remote.then_facts(applied=WITH_TAG).then_facts(applied=NEW)  # after the migrate; after the reversal
    message, text = deploy_with(remote, inv)
    assert message.startswith("release ") and "did not go live" in message
    assert f"{LIVE} is still serving (read back: the live link points at its socket)" in message
    assert "the 1 migration(s) it applied were reversed (read back from the database: notes.0002_tag)" in message
    assert "the after_migrate hook, `manage.py warm_cache --all`, failed with exit status 3" in message
    assert "line 39" in message and "line 19" not in message  # the last lines, bounded
    assert "  | line 0" in text and "  | line 39" in text  # all it printed is in the deploy's output
    assert remote.ran("migrate") and remote.ran("reverse") and remote.ran("set aside")
    assert not remote.ran("start") and not remote.ran("switch")


def test_a_hook_that_times_out_says_so_and_after_how_long():
    inv = inventory(after_migrate=[Hook(("/bin/sleep", "600"), 7)])
    remote = a_server(inv, applied=WITH_TAG)
    remote.on("hook after_migrate 1", ok=False, report=ran("hook after_migrate 1", 1, [], result="timeout",
                                                           exit_status="0", seconds=7.1))
    message, _ = deploy_with(remote, inv)
    assert ("the after_migrate hook, `/bin/sleep 600`, timed out after 7 s (its timeout): systemd stopped it (it "
            "had run 7.1 s); it printed nothing") in message
    assert f"{LIVE} is still serving" in message and not remote.ran("switch")
    hook_script = script_with(remote, "hook after_migrate 1")
    assert '"--property=RuntimeMaxSec=7"' in hook_script and '"--collect"' not in hook_script


def test_the_second_hook_of_a_point_is_named_with_its_place_and_the_ones_after_it_do_not_run():
    inv = inventory(after_migrate=["manage.py one", "manage.py two", "manage.py three"])
    remote = a_server(inv, applied=WITH_TAG)
    remote.on("hook after_migrate 1", report=ran("hook after_migrate 1"))
    remote.on("hook after_migrate 2", ok=False, report=ran("hook after_migrate 2", 1, ["boom"], result="signal",
                                                           exit_status="9"))
    message, text = deploy_with(remote, inv)
    assert "the after_migrate hook 2 of 3, `manage.py two`, was killed by signal 9" in message
    assert "changed   hook after_migrate: `manage.py one`" in text and "manage.py three" not in text


# --- a failure after the switch ------------------------------------------------------------------------------------

def test_an_after_switch_hook_that_fails_leaves_the_release_live_and_fails_the_deploy():
    inv = inventory(after_switch=["manage.py update_index"])
    remote = a_server(inv, applied=WITH_TAG)
    remote.on("hook after_switch 1", ok=False, report=ran("hook after_switch 1", 2, ["ConnectionError: search"],
                                                          result="exit-code", exit_status="2"))
    new_id = []
    remote.on("switch", report={"through_nginx": "200"})

    def live_is_new(probes, _gather=remote.gather):
        answer = _gather(probes)
        if [p.key for p in probes] == ["live"]:
            answer["live"] = new_id[0]
        return answer
    remote.gather = live_is_new
    original = deploy._new_release
    deploy._new_release = lambda src, state, server: new_id.append(original(src, state, server).id) or \
        dataclasses.replace(original(src, state, server), id=new_id[0])
    try:
        message, text = deploy_with(remote, inv)
    finally:
        deploy._new_release = original
    assert message.startswith(f"{new_id[0]} is live and stays live (read back: the live link points at its "
                              "socket), but the after_switch hook, `manage.py update_index`, failed with exit "
                              "status 2; the last lines of its output:\nConnectionError: search"), message
    assert "run it again with `fab manage -- update_index`" in message
    assert "FAILED    hook after_switch" in text and "switch:" in text and "deployed" not in text
    assert remote.ran("switch") and not remote.ran("set aside") and not remote.ran("reverse")


# --- Ctrl-C -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["after_build", "after_migrate", "after_switch"])
def test_ctrl_c_during_a_hook_stops_the_release_s_hook_units(point):
    inv = inventory(**{point: ["/bin/sleep 600"]})
    remote = a_server(inv, applied=WITH_TAG)
    remote.on(f"hook {point} 1", interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        deploy_with(remote, inv)
    interrupted = script_with(remote, f"hook {point} 1")
    release_id = re.search(rf"mysite-hook-([^'\" ]+)-{point}-1", interrupted)[1]
    assert remote.scripts[-1].startswith(f"systemctl stop 'mysite-hook-{release_id}-*'"), remote.scripts[-1]


# --- the dry run ------------------------------------------------------------------------------------------------------

def test_the_dry_run_lists_the_hooks_each_point_would_run():
    inv = inventory(after_build=["manage.py compilemessages"], after_switch=[Hook(("manage.py", "update_index"), 60)])
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, NEW), applied=NEW, inventory=inv))
    remote.on("environment", report={"env_before": {}, "env_after": {}})
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz"):
        pass
    out = io.StringIO()
    deploy.preview(fake.session(remote, inv, out=out), dataclasses.replace(fake.a_source(), archive=archive.getvalue()))
    text = out.getvalue()
    assert ("to run    hooks after_build: `manage.py compilemessages` (timeout 5 s), as the build user, before "
            "Django's checks") in text
    assert "to run    hooks after_switch: `manage.py update_index` (timeout 60 s), as the app user" in text
    assert "after_migrate" not in text
    assert not any(step.startswith("hook") for s in remote.scripts for step in fake.steps_of(s))
