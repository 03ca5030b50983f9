"""Scheduled management commands (app.jobs) on a real server: provision installs a service and a timer per job;
the service runs the command in the live release (read when it starts) as the app user, with its arguments
exactly as the inventory wrote them; a job taken out of the inventory leaves nothing behind; a second provision
changes nothing; `fab provision -v` prints every remote command, and no secret."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.inventory import write_inventory
from tests.integration.appsite import make_site
from tests.integration.conftest import APP, DOMAINS

# A management command the test's copy of the example app adds: a row it can be seen by, and on stdout (the
# journal) who ran it, where, and the arguments it received.
MARK = '''import getpass
import json
import os

from django.core.management.base import BaseCommand

from counter.models import Hit


class Command(BaseCommand):
    help = "Record that the scheduled job ran."

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="*")

    def handle(self, *args, words, **options):
        Hit.objects.create(path="/job/" + "|".join(words))
        print("gw-mark " + json.dumps({"user": getpass.getuser(), "cwd": os.getcwd(), "words": words,
                                       "release": os.environ.get("GANGWAY_RELEASE"),
                                       "database": os.environ.get("DJANGO_DB_NAME")}))
'''
# Arguments a shell, systemd's command line parser or its %-specifiers would each mangle.
WORDS = ["two words", "$(touch /tmp/pwned)", "100%", "it's", "$HOME"]
COMMAND = "gw_mark " + " ".join(f'"{w}"' if "'" in w else f"'{w}'" for w in WORDS)
UNIT = f"{APP}-job-mark"


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "jobs")
    (site.repo.path / "counter/management/commands").mkdir(parents=True)
    site.repo.write("counter/management/__init__.py", "")
    site.repo.write("counter/management/commands/__init__.py", "")
    site.repo.write("counter/management/commands/gw_mark.py", MARK)
    site.repo.commit("a management command to schedule")
    site.deploy()
    return site


def with_jobs(site, jobs) -> None:
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                             health_check="/healthz/", **({"jobs": jobs} if jobs is not None else {}))


def marks(site) -> list[dict]:
    """What each run of the job printed, from the journal."""
    out = site.root(f"journalctl -q -o cat -u {UNIT}.service")
    return [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("gw-mark ")]


def run_job(site) -> None:
    """Start the job's service as the timer would, and wait for it (a oneshot service's start ends with it)."""
    site.root(f"systemctl start {UNIT}.service")
    assert site.root(f"systemctl show -P Result {UNIT}.service").strip() == "success"


def test_provision_installs_the_job_and_its_timer(site):
    with_jobs(site, [{"name": "mark", "command": COMMAND, "schedule": "*-*-* 03:00:00"}])
    out = site.fab("provision").stdout
    assert re.search(rf"changed\s+scheduled jobs: .*{UNIT}\.timer started", out), out
    assert site.root(f"systemctl is-enabled {UNIT}.timer").strip() == "enabled"
    assert site.root(f"systemctl is-active {UNIT}.timer").strip() == "active"
    assert "03:00:00" in site.root(f"systemctl show -P NextElapseUSecRealtime {UNIT}.timer")
    assert site.root(f"stat -c '%a %U' /etc/systemd/system/{UNIT}.service").strip() == "644 root"


def test_the_job_runs_in_the_live_release_as_the_app_user_with_its_arguments_verbatim(site):
    run_job(site)
    live = site.root(f"readlink -f /srv/{APP}/current").strip()
    assert site.sql("select path from counter_hit where path like '/job/%'") == "/job/" + "|".join(WORDS)
    [mark] = marks(site)
    assert mark == {"user": APP, "cwd": live, "words": WORDS, "release": live.rsplit("/", 1)[1], "database": APP}
    uid = site.root(f"id -u {APP}").strip()
    entries = [json.loads(line) for line in site.root(f"journalctl -q -o json -u {UNIT}.service").splitlines()]
    assert {e["_UID"] for e in entries if e.get("MESSAGE", "").startswith("gw-mark")} == {uid}
    assert site.server.root("test -e /tmp/pwned").returncode != 0


def test_after_a_deploy_the_job_runs_in_the_new_release_with_no_provision(site):
    before = site.root(f"readlink -f /srv/{APP}/current").strip()
    site.repo.set_version("2.0")
    # A job added to the inventory but not provisioned yet: the deploy says so, and goes on.
    with_jobs(site, [{"name": "mark", "command": COMMAND, "schedule": "*-*-* 03:00:00"},
                     {"name": "later", "command": "clearsessions", "schedule": "daily"}])
    out = site.deploy().stdout
    assert (f"WARNING   the scheduled jobs on the server differ from the inventory's app.jobs ({APP}-job-later."
            f"service, {APP}-job-later.timer): run `fab provision` to install them") in out, out
    with_jobs(site, [{"name": "mark", "command": COMMAND, "schedule": "*-*-* 03:00:00"}])
    live = site.root(f"readlink -f /srv/{APP}/current").strip()
    assert live != before
    run_job(site)
    assert marks(site)[-1]["cwd"] == live


def test_a_second_provision_changes_nothing_and_verbose_shows_the_commands_without_secrets(site):
    out = site.fab("provision", "-v").stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", out), out
    assert re.search(r"ok\s+scheduled jobs: mark \(\*-\*-\* 03:00:00\)", out), out
    assert re.search(r"^    \[\S+\] \d+ read-only probes, in one command:$", out, re.M), out
    assert re.search(r"^        \$ for f in /etc/systemd/system/mysite-job-\*\.service ", out, re.M), out
    secret = site.root(f"sed -n 's/^DJANGO_SECRET_KEY=//p' /srv/{APP}/shared/env").strip().strip("'")
    assert len(secret) > 40 and secret not in out


def test_a_job_taken_out_of_the_inventory_is_removed(site):
    with_jobs(site, None)
    out = site.fab("provision").stdout
    assert re.search(rf"changed\s+scheduled jobs: {UNIT}\.service removed .*{UNIT}\.timer removed", out), out
    assert site.root(f"ls /etc/systemd/system/ | grep -c '^{UNIT}' || true").strip() == "0"
    assert UNIT not in site.root("systemctl list-timers --all --no-legend")
    again = site.fab("provision").stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", again), again
    assert "ok        scheduled jobs: none in the inventory" in again
