"""`fab deploy`, `fab rollback`, `fab releases`, `fab unlock` on a real provisioned server, with the example app.

The tests in this module build on each other in order (a release history is the point), on the shared
provisioned Debian 13 server; they run after tests/integration/test_provision.py (see conftest.py).
"""

from __future__ import annotations

import re
from shlex import quote
import signal
import subprocess
import time

import pytest

from tests.integration.appsite import GOOD_MIGRATION, Site, deployed_id, make_site
from tests.integration.conftest import APP, DOMAINS, REPO
from tests.load import Load

KEEP_RELEASES = 3
KEEP_FAILED = 2

FAILING_MIGRATION = '''from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("migration broken on purpose")


class Migration(migrations.Migration):
    dependencies = [("counter", "0002_hit_agent")]
    operations = [migrations.RunPython(fail, migrations.RunPython.noop)]
'''


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    return make_site(trixie, tmp_path_factory, "site", keep_releases=KEEP_RELEASES, keep_failed=KEEP_FAILED)


def start_deploy(site: Site) -> subprocess.Popen:
    """`fab deploy` in the background, its output piped to the test."""
    return subprocess.Popen(site.command("deploy"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def history() -> dict:
    """Release ids by name, shared by the tests of this module as the history grows."""
    return {}


def test_first_deploy_serves_the_app_over_https(site, history):
    out = site.deploy()
    history["v1"] = release = deployed_id(out)
    assert re.match(r"^\d{8}T\d{6}Z-[0-9a-f]{7}$", release)
    assert site.answering() == f"1 {release}"
    page = site.get("/")
    assert page.status == 200 and f'<dd id="release">{release}</dd>' in page.body
    css = re.search(r'href="(/static/counter/style\.[0-9a-f]+\.css)"', page.body).group(1)
    static = site.get(css)
    assert static.status == 200 and "text/css" in static.header("content-type")
    assert site.hits() >= 1
    assert "migrations" in out.stdout and "after a backup" in out.stdout
    assert any(name.startswith(f"{release}-before-migrate") for name in site.ls("backups"))


def test_the_secret_key_is_made_on_the_server_and_never_printed(site, history):
    env = site.server.root(f"cat /srv/{APP}/shared/env").stdout
    secret = re.search(r"^DJANGO_SECRET_KEY='(.+)'$", env, re.M).group(1)
    assert len(secret) >= 50
    out = site.deploy()
    history["v1"] = deployed_id(out)
    assert secret not in out.stdout + out.stderr
    assert site.server.root(f"stat -c '%a %U' /srv/{APP}/shared/env").stdout.strip() == "600 root"
    assert site.server.root(f"cat /srv/{APP}/shared/env").stdout == env  # kept across deploys
    # A project that reads DATABASE_URL reaches the same database, as the app user, with no password.
    assert f'DATABASE_URL="postgres:///{APP}"' in env
    url = site.server.root(f"cd /tmp && runuser -u {APP} -- psql -XtAc 'select current_user' postgres:///{APP}")
    assert url.returncode == 0 and url.stdout.strip() == APP, url.stderr


def test_a_code_change_under_load_drops_no_request_and_only_the_new_code_answers_after(site, history):
    site.repo.set_version("2")
    with Load(site.server.host.address, DOMAINS[0], site.server.host.acme_root) as load:
        out = site.deploy()
        returned = time.monotonic()
        time.sleep(1)
    history["v2"] = release = deployed_id(out)
    assert "Python environment reused" in out.stdout
    assert len(load.samples) > 50
    assert load.failures() == [], load.failures()[:5]
    assert load.answered_after(returned) == {f"2 {release}"}


def test_rollback_under_load_drops_no_request_and_only_the_old_code_answers_after(site, history):
    with Load(site.server.host.address, DOMAINS[0], site.server.host.acme_root) as load:
        out = site.rollback()
        returned = time.monotonic()
        time.sleep(1)
    assert f"rolled back to {history['v1']}" in out.stdout
    assert load.failures() == [], load.failures()[:5]
    assert load.answered_after(returned) == {f"1 {history['v1']}"}
    listing = site.fab("releases").stdout
    assert re.search(rf"{history['v1']}.*current", listing)
    # Forward again: the abandoned release is not the "previous" one any more, a new deploy is.
    history["v2b"] = deployed_id(site.deploy())
    assert site.answering() == f"2 {history['v2b']}"


def test_an_old_page_keeps_its_static_files_after_a_switch(site, history):
    """A browser that loaded a page just before a deploy asks for that page's hashed CSS afterwards."""
    old_page = site.get("/").body
    old_css = re.search(r'href="(/static/counter/style\.[0-9a-f]+\.css)"', old_page).group(1)
    style = site.repo.path / "counter/static/counter/style.css"
    site.repo.commit("restyled", **{"counter__static__counter__style.css": style.read_text() + "\nh1 { color: teal; }\n"})
    deployed_id(site.deploy())
    new_css = re.search(r'href="(/static/counter/style\.[0-9a-f]+\.css)"', site.get("/").body).group(1)
    assert new_css != old_css
    for path in (old_css, new_css):
        response = site.get(path)
        assert response.status == 200 and "text/css" in response.header("content-type"), path
    assert "teal" in site.get(new_css).body and "teal" not in site.get(old_css).body


def test_a_dirty_work_tree_is_refused_unless_asked(site):
    site.repo.write("mysite/version.py", 'VERSION = "dirty"\n')
    try:
        out = site.deploy(check=False)
        assert out.returncode != 0 and "uncommitted changes" in out.stderr and "--allow-dirty" in out.stderr
        out = site.deploy("--allow-dirty")
        assert deployed_id(out).endswith("-dirty") and site.answering().startswith("dirty ")
    finally:
        site.repo.git("checkout", "--", ".")
    site.deploy()


def _assert_set_aside(site: Site, out, before: str, hits: int) -> None:
    assert out.returncode != 0
    assert site.answering() == before, "the live release must keep serving"
    assert site.hits() >= hits, "data must be intact"
    failed = re.search(r"release (\S+) did not go live|release (\S+): ", out.stderr)
    assert failed, out.stderr
    release = failed.group(1) or failed.group(2)
    assert release in site.ls("failed") and release not in site.ls("releases")
    assert site.server.root(f"systemctl is-active {APP}@{release}").stdout.strip() != "active"


def test_project_code_builds_without_root_power_and_the_env_file_is_never_run(site):
    """Settings run at build time as the build user (no sudo, owns only the release being built); the release
    is sealed once built; an operator's env line that looks like a command stays a value."""
    good = site.repo.git("rev-parse", "HEAD")
    settings = (site.repo.path / "mysite/settings.py").read_text()
    site.repo.commit("settings record who imports them", **{"mysite__settings.py": settings + (
        "\nimport getpass as _gp\n"
        "if os.access(BASE_DIR, os.W_OK):  # only while the release is being built\n"
        "    (BASE_DIR / 'built-by').write_text(_gp.getuser())\n")})
    env = f"/srv/{APP}/shared/env"
    site.server.root(f"printf '%s\\n' 'GW_EVIL=a; touch /tmp/gw-env-canary' 'GW_EVIL2=$(touch /tmp/gw-env-canary)' >> {env}")
    try:
        release = deployed_id(site.deploy())
        path = f"/srv/{APP}/releases/{release}"
        assert site.server.root(f"cat {path}/built-by").stdout == f"{APP}_build"
        owners = site.server.root(f"find {path} {path}/.venv/ -not -user root | head -n 3").stdout
        assert owners == "", f"not sealed: {owners}"
        assert site.server.root(f"runuser -u {APP}_build -- sudo -n true").returncode != 0
        assert site.server.root("test -e /tmp/gw-env-canary").returncode != 0
    finally:
        site.server.root(f"sed -i '/^GW_EVIL/d' {env}")
        site.repo.reset(good)
    site.deploy()


def test_an_unhealthy_release_is_set_aside_with_its_own_log(site):
    before, hits, good = site.answering(), site.hits(), site.repo.git("rev-parse", "HEAD")
    site.repo.commit("health check broken", **{"mysite__urls.py": (site.repo.path / "mysite/urls.py").read_text() +
                     "\nfrom django.http import HttpResponseServerError\n"
                     "urlpatterns.insert(0, path('healthz/', lambda request: HttpResponseServerError("
                     "'health broken on purpose')))\n"})
    out = site.deploy(check=False)
    _assert_set_aside(site, out, before, hits)
    assert "is not healthy: GET /healthz/ answered 500" in out.stderr
    assert "health broken on purpose" in out.stderr and "journalctl" in out.stderr
    site.repo.reset(good)


def test_a_health_check_that_redirects_is_not_healthy_and_says_where_it_pointed(site):
    before, hits, good = site.answering(), site.hits(), site.repo.git("rev-parse", "HEAD")
    site.repo.commit("health check redirects", **{"mysite__urls.py": (site.repo.path / "mysite/urls.py").read_text() +
                     "\nfrom django.shortcuts import redirect\n"
                     "urlpatterns.insert(0, path('healthz/', lambda request: redirect('/en/healthz/')))\n"})
    out = site.deploy(check=False)
    _assert_set_aside(site, out, before, hits)
    assert "GET /healthz/ answered 302, a redirect to " in out.stderr and "/en/healthz/" in out.stderr
    assert "app.health_check" in out.stderr
    site.repo.reset(good)


def test_static_files_nginx_would_not_serve_stop_the_release_before_traffic_moves(site):
    """A STATIC_URL that is not where nginx serves collected files: every CSS and JS file would answer 404."""
    before, hits, good = site.answering(), site.hits(), site.repo.git("rev-parse", "HEAD")
    settings = (site.repo.path / "mysite/settings.py").read_text()
    site.repo.commit("static files under another URL", **{
        "mysite__settings.py": settings.replace('STATIC_URL = "/static/"', 'STATIC_URL = "/assets/"')})
    try:
        out = site.deploy(check=False)
    finally:
        site.repo.reset(good)
    _assert_set_aside(site, out, before, hits)
    # Caught by the readiness gate, the first of the release check: before anything is migrated.
    assert "STATIC_URL is '/assets/', but nginx serves the static files at /static/" in out.stderr, out.stderr
    assert "the settings are not ready for production" in out.stderr


def test_a_release_that_crashes_at_start_is_set_aside_with_its_traceback(site):
    before, hits, good = site.answering(), site.hits(), site.repo.git("rev-parse", "HEAD")
    site.repo.commit("crash at import", **{"mysite__wsgi.py": "raise ImportError('crash on purpose')\n"})
    out = site.deploy(check=False)
    _assert_set_aside(site, out, before, hits)
    assert "crash on purpose" in out.stderr
    site.repo.reset(good)


def test_a_failing_check_deploy_gate_stops_the_release(site):
    before, hits, good = site.answering(), site.hits(), site.repo.git("rev-parse", "HEAD")
    site.repo.commit("invalid model", **{"counter__models.py": (site.repo.path / "counter/models.py").read_text()
                                         + "\n\nclass Broken(models.Model):\n"
                                         "    other = models.ForeignKey('nope.Missing', on_delete=models.CASCADE)\n"})
    out = site.deploy(check=False)
    _assert_set_aside(site, out, before, hits)
    assert "check --deploy" in out.stderr and "fields.E300" in out.stderr
    site.repo.reset(good)


def test_a_failing_migration_leaves_the_schema_and_the_live_release_as_they_were(site):
    before, hits, good = site.answering(), site.hits(), site.repo.git("rev-parse", "HEAD")
    site.repo.commit("two migrations, the second fails", **{
        "counter__migrations__0002_hit_agent.py": GOOD_MIGRATION,
        "counter__migrations__0003_fails.py": FAILING_MIGRATION,
    })
    out = site.deploy(check=False)
    _assert_set_aside(site, out, before, hits)
    assert "migration broken on purpose" in out.stderr
    assert "reversed" in out.stderr  # 0002 went through before 0003 failed: it is undone
    assert site.sql("select count(*) from django_migrations where app = 'counter'") == "1"
    assert site.sql("select count(*) from information_schema.columns where table_name = 'counter_hit' "
                    "and column_name = 'agent'") == "0"
    site.repo.reset(good)


def test_two_concurrent_deploys_one_is_refused_with_who_holds_the_lock(site):
    site.repo.commit("new requirement", **{"requirements.txt": (site.repo.path / "requirements.txt").read_text()
                                           + "six>=1.16\n"})
    first = start_deploy(site)
    try:
        assert first.stdout.readline().startswith("deploy "), "the first deploy should be under way"
        second = site.deploy(check=False)
        assert second.returncode != 0
        assert "another deploy or rollback is running" in second.stderr and "since" in second.stderr
        assert "fab unlock" in second.stderr
        rest, errors = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, errors
    assert "Python environment built" in rest


@pytest.mark.parametrize("after_seconds", [0.3, 0.9, 1.5])
def test_a_deploy_killed_at_any_moment_leaves_the_live_release_serving(site, after_seconds):
    before = site.answering()
    site.repo.set_version(f"killed-{after_seconds}")
    run = start_deploy(site)
    time.sleep(after_seconds)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    answer = site.answering()  # either the old release, or the new one if the switch had begun: never nothing
    assert answer == before or answer.startswith(f"killed-{after_seconds} ")
    site.repo.set_version(f"after-kill-{after_seconds}")
    release = deployed_id(site.deploy())
    assert site.answering() == f"after-kill-{after_seconds} {release}"
    running = site.server.root(f"systemctl list-units --plain --no-legend --state=active '{APP}@*'").stdout
    # Only the live release and the one before it (kept warm for a quick rollback) are running.
    assert release in running and running.count(f"{APP}@") <= 2, running


def test_ctrl_c_stops_a_deploy_and_frees_the_lock(site):
    before = site.answering()
    site.repo.commit("another requirement", **{"requirements.txt": (site.repo.path / "requirements.txt").read_text()
                                               + "idna>=3\n"})
    run = start_deploy(site)
    try:
        assert run.stdout.readline().startswith("deploy ")
        run.send_signal(signal.SIGINT)
        _, errors = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0 and "interrupted" in errors
    assert site.answering() == before
    # The next deploy is not refused: it waits for the interrupted pip to end on the server, then goes on.
    site.deploy()


def test_a_stuck_lock_is_refused_with_its_holder_and_can_be_cleared(site):
    # A holder that hangs on the server (a run whose connection never closed), detached from any session.
    holder = ("printf '{\"who\": \"ghost@elsewhere\", \"what\": \"deploy\", \"since\": \"earlier\", "
              "\"pid\": %s}\\n' $$$$ > deploy.lock.info; exec sleep 300")  # systemd-run turns $$ into $
    started = site.server.root(f"systemd-run --quiet --uid=deploy --gid=deploy --working-directory=/srv/{APP}/state "
                               f"--unit=gangway-ghost-lock flock deploy.lock sh -c {quote(holder)}")
    assert started.returncode == 0, started.stderr
    time.sleep(0.5)
    refused = site.deploy(check=False)
    assert refused.returncode != 0 and "ghost@elsewhere" in refused.stderr, refused.stderr
    cleared = site.fab("unlock")
    assert "cleared the lock held by ghost@elsewhere" in cleared.stdout
    site.deploy()
    assert "the lock was free" in site.fab("unlock").stdout


def test_rollback_refuses_to_leave_the_database_ahead_of_the_code_unless_told(site, history):
    history["before-migration"] = previous = deployed_id(site.deploy())
    site.repo.commit("a field", **{"counter__migrations__0002_hit_agent.py": GOOD_MIGRATION,
                                   "counter__models.py": (site.repo.path / "counter/models.py").read_text()
                                   + "    agent = models.CharField(max_length=200, default='')\n"})
    site.repo.set_version("with-migration")
    out = site.deploy()
    assert "1 applied (counter.0002_hit_agent)" in out.stdout
    hits = site.hits()
    refused = site.rollback(check=False)
    assert refused.returncode != 0
    assert "counter.0002_hit_agent" in refused.stderr and "--migrate-back" in refused.stderr
    assert site.answering().startswith("with-migration ")
    out = site.rollback("--to", previous, "--migrate-back")
    assert "1 reversed (counter.0002_hit_agent), read back from the database, after a backup" in out.stdout
    assert site.answering().endswith(previous)
    assert site.sql("select count(*) from django_migrations where app = 'counter'") == "1"
    assert site.hits() >= hits  # rows kept; only the added column is gone
    assert any("before-rollback" in name for name in site.ls("backups"))
    listing = site.fab("releases").stdout
    assert "database backups in /srv/mysite/backups/" in listing and "-before-rollback.dump" in listing


def test_a_rollback_with_no_migration_involved_is_quick(site, history):
    site.repo.reset(site.repo.git("rev-list", "--max-count=1", "HEAD~2"))  # back before the migration commit
    site.repo.set_version("quick-a")
    a = deployed_id(site.deploy())
    site.repo.set_version("quick-b")
    deployed_id(site.deploy())
    out = site.rollback()
    seconds = float(re.search(r"in ([\d.]+) s", out.stdout).group(1))
    assert site.answering() == f"quick-a {a}"
    assert "migrations" not in out.stdout
    assert "it was still running, nothing to start" in out.stdout  # the previous release was kept warm
    assert seconds < 10  # the benchmark reports the real figure; this only catches a hang


def test_old_releases_are_pruned_but_current_previous_and_failed_ones_are_kept(site):
    before = site.answering().split()[1]
    site.repo.set_version("last")
    live = deployed_id(site.deploy())
    listing = site.fab("releases").stdout
    releases = site.ls("releases")
    assert len(releases) <= KEEP_RELEASES, releases
    assert {live, before} <= set(releases)
    assert re.search(rf"^{live} .* current ", listing, re.M) and re.search(rf"^{before} .* previous ", listing, re.M)
    assert re.search(r" rolled-back ", listing), listing  # the release a rollback left is marked as such
    failed = site.ls("failed")
    assert 1 <= len(failed) <= KEEP_FAILED and all(re.search(rf"^{f} .* failed ", listing, re.M) for f in failed)
    assert len(site.ls("venvs")) <= len(releases)


def test_provisioning_again_after_deploys_changes_nothing_and_keeps_the_live_release(site):
    live = site.answering()
    out = site.server.provision().stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", out), out
    assert site.answering() == live
