"""A real Celery project on a real server, with `services: [redis]` as its broker and its worker and beat as
process types (app.processes). The test's copy of the example app adds what any Celery project has: celery in
its requirements, mysite/celery.py, the broker's URL read from the environment in its settings, the app
imported by mysite/__init__.py, counter/tasks.py, and a view that queues a task. The live release's worker runs
a task queued by a web request (through nginx, by the site's name) or from `fab manage`, and beat's schedule
reaches it; `fab status` and `fab logs --process` show both; systemd restarts a killed worker; after a
code-only deploy the worker runs the new code and the two beats never ran at once; a long task started before
a deploy is finished by the old worker across the switch (Celery's warm shutdown); a rollback moves the
processes back; after a reboot, the site, the worker, beat and Redis are back with no command."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.appsite import deployed_id, make_site
from tests.integration.conftest import APP, DOMAINS
from tests.integration.inventory import write_inventory
from tests.integration.workers import WAIT, first_row, main_pid, rows, state, wait_state

REQUIREMENTS = "celery[redis]>=5.5,<6\n"

CELERY_APP = '''import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
'''

INIT = '''# Celery's app is loaded with Django, so that @shared_task uses it.
from .celery import app as celery_app

__all__ = ("celery_app",)
'''

# Appended to the example's settings.py. The broker is the Redis `services: [redis]` sets up; beat sends a
# tick every few seconds, with the release of the beat that sent it (read when its settings load).
SETTINGS = '''

# Celery (mysite/celery.py reads every CELERY_ setting).
CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "tick": {"task": "counter.tasks.tick", "schedule": 5.0, "args": (os.environ.get("GANGWAY_RELEASE", ""),)},
}
'''

# Each task leaves a row in counter_hit that the test reads back: what ran it (process type, release) and the
# code's VERSION. `slow` holds its worker until the test says go (a row), or two minutes at most.
TASKS = '''import os
import time

from celery import shared_task
from celery.utils.log import get_task_logger

from counter.models import Hit

VERSION = "@VERSION@"
logger = get_task_logger(__name__)


def ran_by():
    return f"{os.environ.get('GANGWAY_PROCESS', 'none')}/{os.environ.get('GANGWAY_RELEASE', 'none')}"


@shared_task
def record(token):
    logger.info("gw-record %s", token)
    Hit.objects.create(path=f"/celery/{token}/{VERSION}/{ran_by()}")


@shared_task
def tick(beat_release):
    Hit.objects.create(path=f"/tick/{beat_release}")


@shared_task
def slow(token):
    Hit.objects.create(path=f"/slow-start/{token}/{ran_by()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not Hit.objects.filter(path__in=[f"/go/{token}", "/go/all"]).exists():
        time.sleep(0.3)
    time.sleep(3)
    Hit.objects.create(path=f"/slow-done/{token}/{ran_by()}")
'''

# A view that queues a task, as a web request of the app would: GET /enqueue/TOKEN/ answers 202 once it is queued.
URLS = '''

from django.http import HttpResponse
from django.urls import path as _path

from counter import tasks as _tasks


def enqueue(request, token):
    _tasks.record.delay(token)
    return HttpResponse("queued", status=202)


urlpatterns.append(_path("enqueue/<slug:token>/", enqueue))
'''

# The README's commands. The worker may take up to three minutes to finish its task in hand when it is stopped.
PROCESSES = {
    "worker": {"command": "celery -A mysite worker -l info", "stop_timeout": 180},
    "beat": f"celery -A mysite beat -l info --schedule /var/lib/{APP}-beat/celerybeat-schedule",
}


def write_tasks(site, version: str) -> None:
    site.repo.commit(f"tasks {version}", **{"counter__tasks.py": TASKS.replace("@VERSION@", version)})


def with_celery(site, on: bool) -> None:
    """The site's inventory with (or without) the worker and beat and `services: [redis]`."""
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                    health_check="/healthz/", **({"processes": PROCESSES} if on else {}))
    if on:
        site.inventory.write_text(site.inventory.read_text() + "services: [\"redis\"]\n")


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "celery")
    site.repo.write("requirements.txt", (site.repo.path / "requirements.txt").read_text() + REQUIREMENTS)
    site.repo.write("mysite/celery.py", CELERY_APP)
    site.repo.write("mysite/__init__.py", INIT)
    site.repo.write("mysite/settings.py", (site.repo.path / "mysite/settings.py").read_text() + SETTINGS)
    site.repo.write("mysite/urls.py", (site.repo.path / "mysite/urls.py").read_text() + URLS)
    write_tasks(site, "v1")
    with_celery(site, True)
    try:
        site.fab("provision")
        site.first = deployed_id(site.deploy())
        yield site
    finally:
        # A task left waiting by a failed test goes on, so that its worker stops at once; then the shared
        # server goes on without process types, and without Redis in the app's environment, as the next module
        # expects (Redis itself stays installed, as test_redis leaves it).
        try:
            site.sql("insert into counter_hit (created, path) values (now(), '/go/all')")
        except AssertionError:
            pass  # no table: nothing was deployed
        with_celery(site, False)
        site.fab("provision")


def unit(name: str, release: str) -> str:
    return f"{APP}-{name}@{release}.service"


def enqueue(site, call: str) -> None:
    """Queue a task from the live release, as the app's code would: `fab manage -- shell -c ...`."""
    site.fab("manage", "--", "shell", "-c", f"from counter import tasks; tasks.{call}")


def never_two_at_once(site, units: list[str]) -> None:
    """From systemd's own records in the journal (the job messages of PID 1: Starting, Stopped), no two of
    `units` were ever running at the same time, each counted from the start of its start to the end of its stop;
    and each of them did start."""
    out = site.root("journalctl --no-pager -o json " + " ".join(f"-u {u}" for u in units))
    running, started, events = set(), set(), []
    for line in out.splitlines():
        entry = json.loads(line)
        name, job, result = entry.get("UNIT"), entry.get("JOB_TYPE"), entry.get("JOB_RESULT")
        if name not in units or job not in ("start", "stop"):
            continue
        events.append(f"{job} {result or 'begins'} {name}")
        if job == "start" and result is None:
            running.add(name)
            started.add(name)
        elif job == "stop" and result is not None or job == "start" and result != "done":
            running.discard(name)
        assert len(running) <= 1, "\n".join(events)
    assert started == set(units), "\n".join(events)


def queue_from_the_web(site, token: str) -> None:
    """Queue `record(token)` with a request through nginx, by the site's name, as a visitor would."""
    response = site.get(f"/enqueue/{token}/")
    assert response.status == 202, f"{response.status}: {response.body[:300]}"


def test_a_worker_of_the_live_release_runs_a_task_queued_by_a_web_request(site):
    queue_from_the_web(site, "from-the-web")
    assert first_row(site, "/celery/from-the-web/%") == f"/celery/from-the-web/v1/worker/{site.first}"


def test_a_worker_of_the_live_release_runs_a_task_queued_from_manage(site):
    enqueue(site, "record.delay('first')")
    assert first_row(site, "/celery/first/%") == f"/celery/first/v1/worker/{site.first}"
    # beat's schedule reaches a worker too.
    assert first_row(site, f"/tick/{site.first}") == f"/tick/{site.first}"


def test_systemd_restarts_a_killed_worker(site):
    worker = unit("worker", site.first)
    before, restarts = main_pid(site, worker), int(site.root(f"systemctl show -P NRestarts {worker}").strip())
    assert before > 0
    site.root(f"kill -KILL {before}")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not (state(site, worker) == "active" and main_pid(site, worker) not in
                                               (0, before)):
        time.sleep(0.5)
    assert int(site.root(f"systemctl show -P NRestarts {worker}").strip()) == restarts + 1
    assert state(site, worker) == "active" and main_pid(site, worker) not in (0, before)
    queue_from_the_web(site, "after-kill")
    assert first_row(site, "/celery/after-kill/%") == f"/celery/after-kill/v1/worker/{site.first}"


def test_status_and_logs_show_the_worker_and_beat(site):
    out = site.fab("status", check=False).stdout
    assert f"{unit('worker', site.first)} running" in out, out
    assert f"{unit('beat', site.first)} running" in out, out
    worker = site.fab("logs", "--process", "worker", "--lines", "2000").stdout
    assert re.search(rf"{APP}-worker\[\d+\]: .*celery@\S+ ready\.", worker), worker
    assert re.search(rf"{APP}-worker\[\d+\]: .*counter\.tasks\.record\[[0-9a-f-]+\]: gw-record first", worker), worker
    beat = site.fab("logs", "--process", "beat", "--lines", "2000").stdout
    assert re.search(rf"{APP}-beat\[\d+\]: .*Sending due task tick \(counter\.tasks\.tick\)", beat), beat


def test_after_a_code_only_deploy_the_worker_runs_the_new_code_and_beat_never_ran_twice(site):
    write_tasks(site, "v2")
    out = site.deploy().stdout
    site.second = deployed_id(out)
    assert "Python environment reused" in out, out
    assert "stopping gracefully" in out, out
    wait_state(site, unit("worker", site.first), "inactive")
    enqueue(site, "record.delay('second')")
    assert first_row(site, "/celery/second/%") == f"/celery/second/v2/worker/{site.second}"
    assert first_row(site, f"/tick/{site.second}") == f"/tick/{site.second}"
    assert state(site, unit("beat", site.first)) == "inactive"
    never_two_at_once(site, [unit("beat", site.first), unit("beat", site.second)])


def test_a_long_task_started_before_a_deploy_is_finished_by_the_old_worker(site):
    enqueue(site, "slow.delay('long')")
    assert first_row(site, "/slow-start/long/%") == f"/slow-start/long/worker/{site.second}"
    write_tasks(site, "v3")
    out = site.deploy().stdout
    site.third = deployed_id(out)
    old = unit("worker", site.second)
    # The switch is done and the old worker has had its SIGTERM, yet it is still finishing the task in hand.
    assert state(site, old) == "deactivating", out
    assert state(site, unit("worker", site.third)) == "active"
    assert not rows(site, "/slow-done/long/%")
    site.sql("insert into counter_hit (created, path) values (now(), '/go/long')")
    assert first_row(site, "/slow-done/long/%") == f"/slow-done/long/worker/{site.second}"
    wait_state(site, old, "inactive")
    journal = site.root(f"journalctl -u {old} --no-pager -o cat")
    warm = journal.find("worker: Warm shutdown (MainProcess)")
    done = re.search(r"Task counter\.tasks\.slow\[[0-9a-f-]+\] succeeded", journal)
    assert 0 <= warm and done and warm < done.start(), journal
    assert "Deactivated successfully" in journal and "Failed with result" not in journal, journal


def test_a_rollback_moves_the_processes_back(site):
    out = site.rollback("--to", site.second).stdout
    assert site.answering().endswith(site.second), out
    for name in ("worker", "beat"):
        assert state(site, unit(name, site.second)) == "active", out
        wait_state(site, unit(name, site.third), "inactive")
    enqueue(site, "record.delay('rolled-back')")
    assert first_row(site, "/celery/rolled-back/%") == f"/celery/rolled-back/v2/worker/{site.second}"
    never_two_at_once(site, [unit("beat", release) for release in (site.first, site.second, site.third)])


def test_after_a_reboot_the_site_worker_beat_and_redis_are_back_with_no_command(site):
    live = site.second  # the previous test rolled back to it
    ticks = len(rows(site, f"/tick/{live}"))
    site.server.host.reboot()
    deadline, last = time.monotonic() + 120, ""
    while time.monotonic() < deadline:  # one request at a time, at most every 0.5 s
        try:
            response = site.get(timeout=5)
            if response.status == 200:
                break
            last = f"{response.status}"
        except (OSError, ValueError, IndexError) as exc:  # refused, reset, TLS not ready, empty answer
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    assert site.answering().endswith(f" {live}"), last
    for name in ("worker", "beat"):
        wait_state(site, unit(name, live), "active")
    assert state(site, "redis-server") == "active"
    queue_from_the_web(site, "after-reboot")
    assert first_row(site, "/celery/after-reboot/%") == f"/celery/after-reboot/v2/worker/{live}"
    deadline = time.monotonic() + WAIT
    while len(rows(site, f"/tick/{live}")) <= ticks and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(rows(site, f"/tick/{live}")) > ticks, "no tick from beat since the reboot"
    # Only the live release's processes came back: no other release's worker or beat runs.
    running = site.root(f"systemctl list-units --plain --no-legend --state=active '{APP}-worker@*' '{APP}-beat@*'")
    assert sorted(re.findall(rf"{APP}-(\w+)@(\S+?)\.service", running)) == [("beat", live), ("worker", live)], running
