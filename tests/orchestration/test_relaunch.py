"""`fab config --set` restarts the live code with the new values (`deploy.relaunch`), against the fake server: the
settings are checked with them as a deploy checks a release (readiness, check --deploy) before anything starts; a
new instance that does not answer healthy leaves the previous one serving with the previous values, and the
message says which values the server holds now, and whether the live release is running, read back after the
failure. (An instance that never starts: test_served.py; values past
Linux's limit: test_envsize.py.)"""

from __future__ import annotations

import io

import pytest

from tasks.cli import deploy, operate
from tasks.session.run import DeployError
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
SERVING = f"the new instance of {LIVE} did not go live; {LIVE} is still serving (read back: live, its instance active):\n"
UNHEALTHY = ("release 20261205T000000Z-aaaaaaa is not healthy: GET / answered 500\n--- errors in its log:\n"
             "KeyError: 'SECRET_KEY'")


def a_server(**facts) -> fake.FakeRemote:
    return fake.FakeRemote({**fake.server(fake.release(LIVE)), "config": "OLD=1\n", "unit_reads_config": True,
                            **facts}).on("checks", report={"gate": "checks", "warnings": []})


def config_set(remote: fake.FakeRemote, out: io.StringIO | None = None) -> None:
    operate.config_on(fake.session(remote, out=out), {"SECRET_KEY": "new"}, [], False)


def failed(remote: fake.FakeRemote) -> str:
    with pytest.raises(DeployError) as error:
        config_set(remote)
    return str(error.value)


def test_a_new_instance_that_fails_its_health_check_leaves_the_previous_one_and_values_live():
    remote = a_server().on("start", ok=False, output=UNHEALTHY)
    message = failed(remote)
    assert message.startswith(SERVING)
    assert "is not healthy: GET / answered 500" in message and "KeyError: 'SECRET_KEY'" in message
    assert message.endswith("The previous values were restored.")
    assert remote.ran("set aside") and remote.ran("restore")  # the new instance removed, the old file back
    assert not remote.ran("keep")


def test_previous_values_that_could_not_be_put_back_are_said_to_be_not_restored():
    remote = a_server().on("start", ok=False, output=UNHEALTHY).on("restore", ok=False, output="mv: No space")
    message = failed(remote)
    assert message.startswith(SERVING)
    assert message.endswith("The previous values were NOT restored: check /srv/mysite/shared/config.env on the "
                            "server.")
    assert "were restored" not in message


def test_a_new_instance_nginx_does_not_serve_is_undone_the_same_way():
    served = f"nginx does not serve X: GET / through nginx by the name 10.0.0.2 answered 200 from {LIVE}"
    remote = a_server().on("switch", ok=False, output=served)
    message = failed(remote)
    assert message.startswith(SERVING)
    assert served in message and message.endswith("The previous values were restored.")


# --- the gates of a deploy that the environment decides ------------------------------------------------------

DEBUG_ON = ("the settings are not ready for production:\n- DEBUG is on in production: your settings read it from "
            "the environment variable DJANGO_DEBUG, which the app's environment sets so that DEBUG is on, so error "
            "pages would show your code, settings and data to any visitor; turn it off with `fab config --set "
            "DJANGO_DEBUG=0`")


def test_new_values_that_turn_debug_on_are_refused_by_the_readiness_check_before_anything_starts():
    """`fab config --set DJANGO_DEBUG=1`: the health check alone would pass (the app answers 200, with debug
    pages); the readiness check a deploy runs does not, and it runs here too, with the new values."""
    remote = a_server().on("checks", ok=False, report={"gate": "readiness"}, output=DEBUG_ON)
    message = failed(remote)
    assert message.startswith(f"a new instance of {LIVE} was not started: the settings are not ready for "
                              f"production, with the new environment; {LIVE} is still serving (read back: live, "
                              "its instance active):\n  - DEBUG is on in production: your settings read it from "
                              "the environment variable DJANGO_DEBUG")
    assert message.endswith("The previous values were restored.")
    assert not remote.ran("start") and not remote.ran("switch")
    assert remote.ran("remove") and remote.ran("restore") and not remote.ran("keep")


def test_deploy_checks_that_fail_with_the_new_values_are_refused_the_same_way():
    remote = a_server().on("checks", ok=False, report={"gate": "checks"}, output=(
        "`manage.py check --deploy` found problems:\nSystemCheckError: System check identified some issues:\n"
        "ERRORS:\n?: (security.E100) DEFAULT_HASHING_ALGORITHM must be 'sha1' or 'sha256'."))
    message = failed(remote)
    assert message.startswith(f"a new instance of {LIVE} was not started: Django's checks (manage.py check "
                              "--deploy) found errors, with the new environment;")
    assert "security.E100" in message and message.endswith("The previous values were restored.")
    assert not remote.ran("start")


def test_the_checks_run_in_the_new_instance_with_the_new_values_before_it_starts():
    remote = a_server().on("checks", report={"gate": "checks", "warnings": ["?: (security.W004) no HSTS"],
                                             "readiness": ["the cache is local memory"]})
    remote.on("start", report={"health": "200"}).on("switch", report={"through_nginx": "200", "repaired": False})
    out = io.StringIO()
    config_set(remote, out)
    steps = [name for script in remote.scripts for name in fake.steps_of(script)]
    assert steps.index("install") < steps.index("copy") < steps.index("checks") < steps.index("start")
    (checks,) = [script for script in remote.scripts if "checks" in fake.steps_of(script)]
    assert '"sealed": true' in checks and "/srv/mysite/releases/20261201T000000Z-aaaaaaa" not in checks
    said = out.getvalue()
    assert ("  ok        checks: the readiness check and manage.py check --deploy passed with the new environment; "
            "1 warning(s):\n            ?: (security.W004) no HSTS") in said
    assert "readiness: 1 thing(s) to improve in the settings:\n            - the cache is local memory" in said


# --- the live release, read back after the failure -----------------------------------------------------------

def test_a_live_release_that_is_not_running_is_not_said_to_be_serving():
    """Its instance had stopped before the config change (or stopped during it): systemd says so, and so does
    the message, with the command that starts it."""
    remote = a_server(running=[], unit_state="failed").on("start", ok=False, output=UNHEALTHY)
    message = failed(remote)
    assert message.startswith(f"the new instance of {LIVE} did not go live; {LIVE} is still the live release but "
                              "it is NOT running (read back: systemd says failed), so the site does not answer: "
                              f"`fab rollback --to {LIVE}` starts it:\n")
    assert "still serving" not in message and message.endswith("The previous values were restored.")
    assert remote.reads[-1] == ["live", "unit_state"]  # read after the failure, not taken from before it


def test_a_live_release_whose_state_cannot_be_read_is_not_said_to_be_serving():
    remote = a_server(unit_state=None).on("start", ok=False, output=UNHEALTHY)
    message = failed(remote)
    assert message.startswith(f"the new instance of {LIVE} did not go live; {LIVE} is still the live release; "
                              "whether it is running could not be read back:\n")
    assert "still serving" not in message


def test_a_live_link_that_no_longer_points_at_the_live_release_is_said_as_read():
    remote = a_server().on("switch", ok=False, output="nginx did not reload")
    remote.then_facts().then_facts(live="20261205T000000Z-aaaaaaa")  # read after the failure only
    message = failed(remote)
    assert (f"did not go live; the live link points at 20261205T000000Z-aaaaaaa (read back), not at {LIVE}: see "
            "`fab status` and `fab releases`:\n") in message
    assert "still serving" not in message


def test_a_copy_of_the_live_release_that_fails_starts_nothing_and_puts_the_values_back():
    remote = a_server().on("copy", ok=False, output="cp: No space left on device")
    message = failed(remote)
    assert message.startswith(f"could not start a new instance of {LIVE}:\n") and "No space left" in message
    assert message.endswith("The previous values were restored.")
    assert not remote.ran("start") and remote.ran("remove")


def test_new_values_the_new_instance_answers_with_are_live():
    remote = a_server().on("start", report={"health": "200"}).on("switch", report={"through_nginx": "200",
                                                                                     "repaired": False})
    out = io.StringIO()
    config_set(remote, out)
    (line,) = [line for line in out.getvalue().splitlines() if "  changed   config:" in line]
    assert line.startswith("  changed   config: SECRET_KEY set; ") and line.endswith(
        f"(the same code as {LIVE}) is live with them")
    assert remote.ran("keep") and not remote.ran("restore")


def test_a_relaunch_with_no_live_release_restarts_nothing():
    remote = fake.FakeRemote(fake.server())
    session = fake.session(remote)
    with pytest.raises(DeployError, match="no release is live yet: nothing to restart"):
        deploy.relaunch(session, session.state(), "config")
    assert remote.scripts == []
