""""Deployed" means visitors get the new release: deploy, rollback, relaunch and `fab status`, against the fake
server. Each failure branch asserts what is true on the server, and fails if the message goes back to the one
that was assumed ("healthy", "all well")."""

from __future__ import annotations

import io

import pytest

from tasks.cli import deploy, rollback, status
from tasks.commands import release as commands
from tasks.inventory import App, Host, Inventory
from tasks.layout import Layout
from tasks.session.run import DeployError
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
OLD = "20261130T000000Z-ccccccc"
LAYOUT = Layout("mysite")
SITE = Inventory(App("mysite", domains=("blog.example.com",)), (Host("10.0.0.2"),))


def a_server(inventory: Inventory = SITE, **facts) -> fake.FakeRemote:
    """A server provisioned with `inventory`, LIVE serving and OLD warm."""
    remote = fake.FakeRemote({**fake.server(fake.release(OLD), fake.release(LIVE), live=LIVE, running=[LIVE, OLD],
                                            inventory=inventory), **facts})
    return remote.on("checks", report={"migrations": [], "venv": "reused", "warnings": []})


def switch_script(remote: fake.FakeRemote) -> str:
    return next(s for s in remote.scripts if "switch" in fake.steps_of(s))


def deployed(remote: fake.FakeRemote, inventory: Inventory = SITE) -> tuple[str, str]:
    out = io.StringIO()
    release = deploy.deploy_to(fake.session(remote, inventory, out), fake.a_source())
    return release, out.getvalue()


def failed_deploy(remote: fake.FakeRemote) -> str:
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote, SITE), fake.a_source())
    return str(failed.value)


# --- deploy -------------------------------------------------------------------------------------------------

def test_a_deploy_asks_the_site_through_nginx_by_its_name_and_needs_the_new_release_to_answer():
    remote = a_server().on("start", report={"health": "200"}).on(
        "switch", report={"through_nginx": "200", "repaired": False})
    release, out = deployed(remote)
    script = switch_script(remote)
    assert f"want={LAYOUT.socket(release)}" in script
    assert "--resolve blog.example.com:443:127.0.0.1" in script and "https://blog.example.com/" in script
    assert f"mktemp {LAYOUT.nginx_backend}" not in script  # the include is already gangway's: nothing to write
    assert (f"healthy on its own socket: GET / -> 200; the site answers GET / through nginx as blog.example.com "
            f"-> 200, from {release}") in out
    assert "reloaded" not in out


def test_a_server_without_domains_is_asked_by_its_address():
    bare = Inventory(App("mysite"), (Host("10.0.0.2"),))
    remote = a_server(bare).on("switch", report={"through_nginx": "200", "repaired": False})
    release, out = deployed(remote, bare)
    assert "--connect-to 10.0.0.2:80:127.0.0.1:80" in switch_script(remote)
    assert f"through nginx as 10.0.0.2 -> 200, from {release}" in out


def test_a_deploy_that_found_nginx_serving_something_else_says_it_reloaded_it():
    remote = a_server().on("switch", report={"through_nginx": "200", "repaired": True})
    _, out = deployed(remote)
    assert "(nginx was serving something else: it is reloaded now)" in out


def test_an_include_from_an_older_gangway_is_rewritten_and_nginx_reloaded_in_the_switch():
    remote = a_server(backend="proxy_pass http://unix:/srv/mysite/live.sock;\n").on(
        "switch", report={"through_nginx": "200", "repaired": False})
    deployed(remote)
    script = switch_script(remote)
    assert f"mktemp {LAYOUT.nginx_backend}" in script
    assert script.index(f"mktemp {LAYOUT.nginx_backend}") < script.index("systemctl reload nginx")


def test_a_site_that_does_not_serve_the_release_through_nginx_fails_the_deploy_with_what_nginx_served():
    served = ("nginx does not serve X, even after a reload: GET / through nginx by the name blog.example.com "
              "answered 200 with no release behind it: the placeholder page, or a config that does not proxy to "
              "the live link.")
    remote = a_server().on("start", report={"health": "200"}).on("switch", ok=False, output=served)
    message = failed_deploy(remote)
    assert "did not go live; " + f"{LIVE} is still serving" in message
    assert served in message
    assert "healthy" not in message and "deployed" not in message
    assert remote.ran("set aside")


def test_a_release_whose_instance_never_starts_is_reported_as_that_with_its_journal():
    journal = ("the instance mysite@X.service failed to start (systemd: failed): Job for mysite@X.service failed\n"
               "--- the end of its log (journalctl -u mysite@X.service):\n"
               "mysite@X.service: Failed to execute /srv/mysite/releases/X/.venv/bin/gunicorn: Argument list too long")
    remote = a_server().on("start", ok=False, output=journal)
    message = failed_deploy(remote)
    assert "failed to start" in message and "Argument list too long" in message
    assert "healthy" not in message
    assert remote.ran("set aside")


# --- rollback and relaunch go through the same switch ----------------------------------------------------------

def test_a_rollback_proves_the_target_answers_through_nginx():
    remote = a_server().on("switch", report={"through_nginx": "200", "repaired": False})
    out = io.StringIO()
    target = rollback.rollback_on(fake.session(remote, SITE, out), None, False)
    assert target == OLD
    assert f"want={LAYOUT.socket(OLD)}" in switch_script(remote)
    assert f"through nginx as blog.example.com -> 200, from {OLD}" in out.getvalue()


def test_a_relaunch_whose_instance_never_starts_says_so_not_that_it_was_unhealthy():
    """The environment past Linux's argument limit: the instance never started; its journal said why."""
    remote = a_server().on("start", ok=False, output="the instance mysite@Y.service failed to start (systemd: "
                                                     "failed): ...\nArgument list too long")
    session = fake.session(remote, SITE)
    with pytest.raises(DeployError) as failed:
        deploy.relaunch(session, session.state(), "config")
    message = str(failed.value)
    assert message.startswith(f"the new instance of {LIVE} did not go live; {LIVE} is still serving (read back: "
                              "live, its instance active):")
    assert "failed to start" in message and "Argument list too long" in message
    assert "did not answer healthy" not in message


# --- fab status ----------------------------------------------------------------------------------------------

def status_facts(health: status.Health) -> dict:
    return {**fake.server(fake.release(OLD), fake.release(LIVE), live=LIVE),
            "now": 1_800_000_000, "units": {f"mysite@{LIVE}.service": "active/running",
                                            "nginx.service": "active/running",
                                            "postgresql.service": "active/exited"},
            "timers": [], "health": health, "certificate": None, "disk": [status.Disk("/", 40, 8 << 20)],
            "memory": {"MemTotal": 2_000_000, "MemAvailable": 1_500_000}, "newest_backup": None,
            "updates": (0, 0), "unattended": True, "reboot": None, "database:reach": {"ok": True, "said": "mysite@mysite"}}


def status_of(health: status.Health) -> tuple[int, str]:
    out = io.StringIO()
    code = status.status_on(fake.session(fake.FakeRemote(status_facts(health)), out=out))
    return code, out.getvalue()


def test_status_fails_when_nginx_serves_the_placeholder_page_while_a_release_is_live():
    code, out = status_of(status.Health("200", 0, True, ""))
    assert code == 2 and "all well" not in out
    assert (f"-> 200, but from no release: nginx serves the placeholder page (or a config that does not proxy to "
            f"the live link), not {LIVE}: run `fab deploy` (it repairs nginx)") in out
    assert "needs attention: health" in out.rstrip().splitlines()[-1]


def test_status_fails_when_nginx_serves_a_release_that_is_not_the_live_one():
    code, out = status_of(status.Health("200", 0, True, LAYOUT.socket(OLD)))
    assert code == 2 and f"-> 200, but from {OLD}, not the live release {LIVE}" in out


def test_status_is_well_when_the_live_release_answers_through_nginx():
    code, out = status_of(status.Health("200", 0, True, LAYOUT.socket(LIVE)))
    assert f"GET http://10.0.0.2/ through nginx on the server -> 200, from {LIVE}" in out
    assert "health" not in out.rstrip().splitlines()[-1]


def test_the_probe_status_sends_is_the_one_builder_s_request():
    remote = fake.FakeRemote(status_facts(status.Health("200", 0, True, LAYOUT.socket(LIVE))))
    status.status_on(fake.session(remote))
    asked = [p for read in remote.reads for p in read]
    assert "health" in asked
    command = status.health_command("10.0.0.2", "/", False)
    assert commands.through_nginx("10.0.0.2", "/", False, "-o", "/dev/null", "-w", commands.SERVED) in command
