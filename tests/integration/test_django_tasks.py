"""A real django-tasks project on a real server: Django's tasks framework (the `django_tasks` backport on the
example's Django 5.2; `django.tasks` itself from Django 6.0 on) with the database backend of django-tasks-db,
whose `manage.py db_worker` is a process type (app.processes). The queue is a table in the app's own
PostgreSQL: the inventory has no `services`, so there is no Redis. The test's copy of the example app adds
the two packages to its requirements, the backend to its settings, counter/tasks.py and a page that queues a
task. A request through nginx, by the site's name, queues a task that the live release's worker runs; `fab
status` and `fab logs --process` show the worker; systemd restarts a killed worker; after a code-only deploy
the new worker runs the new code while the old one finishes its task in hand and exits cleanly on SIGTERM; a
rollback runs the old worker code again."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.appsite import deployed_id, make_site
from tests.integration.conftest import APP, DOMAINS
from tests.integration.inventory import write_inventory
from tests.integration.workers import WAIT, first_row, main_pid, rows, state, wait_state

# The backport of Django 6.0's tasks framework, and the database backend that left it for a package of its own
# in django-tasks 0.12. Both are before 1.0, so each is held to the minor release the test was written against.
REQUIREMENTS = "django-tasks>=0.12,<0.13\ndjango-tasks-db>=0.13,<0.14\n"

# Appended to the example's settings.py.
SETTINGS = '''

# Background tasks: Django's tasks framework, queued in the database (django-tasks-db); `manage.py db_worker`
# runs them. On Django 6.0 and later only "django_tasks_db" is needed here (the framework is django.tasks).
INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
'''

# Each task leaves a row in counter_hit that the test reads back: what ran it (process type, release) and the
# code's VERSION. `slow` holds its worker until the test says go (a row), or five minutes at most.
TASKS = '''import os
import time

from django_tasks import task

from counter.models import Hit

VERSION = "@VERSION@"


def ran_by():
    return f"{os.environ.get('GANGWAY_PROCESS', 'none')}/{os.environ.get('GANGWAY_RELEASE', 'none')}"


@task()
def record(token):
    path = f"/dbtask/{token}/{VERSION}/{ran_by()}"
    Hit.objects.create(path=path)
    return path


@task()
def slow(token):
    Hit.objects.create(path=f"/slow-start/{token}/{ran_by()}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not Hit.objects.filter(path__in=[f"/go/{token}", "/go/all"]).exists():
        time.sleep(0.3)
    Hit.objects.create(path=f"/slow-done/{token}/{ran_by()}")
'''

# Appended to mysite/urls.py: a page that queues counter.tasks.NAME(TOKEN) and answers with what the backend
# stored ("ID STATUS"), as a view of a real project queues its work.
URLS = '''

from django.http import Http404, HttpResponse  # noqa: E402
from django.views.decorators.cache import never_cache  # noqa: E402

from counter import tasks  # noqa: E402


@never_cache
def enqueue(request, name, token):
    task = {"record": tasks.record, "slow": tasks.slow}.get(name)
    if task is None:
        raise Http404(name)
    result = task.enqueue(token)
    return HttpResponse(f"{result.id} {result.status}", content_type="text/plain")


urlpatterns += [path("enqueue/<slug:name>/<slug:token>/", enqueue)]
'''

# The README's lines: the worker may take up to five minutes to finish its task in hand when it is stopped.
PROCESSES = {"tasks": {"command": "manage.py db_worker", "stop_timeout": 300}}
QUEUE = "django_tasks_database_dbtaskresult"  # django-tasks-db's table (its app label is django_tasks_database)


def write_tasks(site, version: str) -> None:
    site.repo.commit(f"tasks {version}", **{"counter__tasks.py": TASKS.replace("@VERSION@", version)})


def with_worker(site, on: bool) -> None:
    """The site's inventory with (or without) the worker; never any `services`."""
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                    health_check="/healthz/", **({"processes": PROCESSES} if on else {}))


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "django-tasks")
    site.repo.write("requirements.txt", (site.repo.path / "requirements.txt").read_text() + REQUIREMENTS)
    site.repo.write("mysite/settings.py", (site.repo.path / "mysite/settings.py").read_text() + SETTINGS)
    site.repo.write("mysite/urls.py", (site.repo.path / "mysite/urls.py").read_text() + URLS)
    write_tasks(site, "v1")
    with_worker(site, True)
    try:
        site.fab("provision")
        site.first = deployed_id(site.deploy())
        yield site
    finally:
        # A task left waiting by a failed test goes on, so that its worker stops at once; then the shared
        # server goes on without process types, as the next module expects.
        try:
            site.sql("insert into counter_hit (created, path) values (now(), '/go/all')")
        except AssertionError:
            pass  # no table: nothing was deployed
        with_worker(site, False)
        site.fab("provision")


def unit(release: str) -> str:
    return f"{APP}-tasks@{release}.service"


def enqueue(site, name: str, token: str) -> str:
    """Queue counter.tasks.NAME(TOKEN) with a request through nginx, by the site's name; the task's id."""
    response = site.get(f"/enqueue/{name}/{token}/")
    assert response.status == 200, f"{response.status}: {response.body[:500]}"
    task_id, status = response.body.split()
    assert status == "READY", response.body
    return task_id


def queued(site, task_id: str) -> str:
    """The backend's own record of a task: "STATUS|RETURN VALUE" (the value as JSON)."""
    assert re.fullmatch(r"[0-9a-f-]{36}", task_id), task_id
    return site.sql(f"select status || '|' || coalesce(return_value::text, '') from {QUEUE} where id = '{task_id}'")


def test_a_request_queues_a_task_that_the_live_releases_worker_runs_with_no_broker(site):
    task_id = enqueue(site, "record", "first")
    done = f"/dbtask/first/v1/tasks/{site.first}"
    assert first_row(site, "/dbtask/first/%") == done
    assert queued(site, task_id) == f'SUCCESSFUL|"{done}"'
    # The queue is the database: the worker was given no broker at all.
    environ = site.root(f"tr '\\0' '\\n' < /proc/{main_pid(site, unit(site.first))}/environ")
    names = {line.partition("=")[0] for line in environ.splitlines()}
    assert {"DATABASE_URL", "GANGWAY_RELEASE", "GANGWAY_PROCESS"} <= names, names
    assert not names & {"REDIS_URL", "CELERY_BROKER_URL"}, names


def test_status_and_logs_show_the_worker(site):
    out = site.fab("status", check=False).stdout
    assert f"{unit(site.first)} running" in out, out
    logs = site.fab("logs", "--process", "tasks", "--lines", "2000").stdout
    assert re.search(rf"{APP}-tasks\[\d+\]: .*Starting worker worker_id=\S+ queues=default", logs), logs
    assert re.search(rf"{APP}-tasks\[\d+\]: .*Task id=[0-9a-f-]+ path=counter\.tasks\.record state=SUCCESSFUL",
                     logs), logs


def test_systemd_restarts_a_killed_worker(site):
    worker = unit(site.first)
    pid = main_pid(site, worker)
    site.root(f"kill -9 {pid}")
    deadline = time.monotonic() + WAIT
    while (main_pid(site, worker) in (0, pid) or state(site, worker) != "active") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert main_pid(site, worker) not in (0, pid) and state(site, worker) == "active"
    assert site.root(f"systemctl show -P NRestarts {worker}").strip() != "0"
    enqueue(site, "record", "restarted")
    assert first_row(site, "/dbtask/restarted/%") == f"/dbtask/restarted/v1/tasks/{site.first}"


def test_after_a_code_only_deploy_the_new_worker_runs_the_new_code_and_the_old_one_stops_gracefully(site):
    enqueue(site, "slow", "long")
    assert first_row(site, "/slow-start/long/%") == f"/slow-start/long/tasks/{site.first}"
    write_tasks(site, "v2")
    out = site.deploy().stdout
    site.second = deployed_id(out)
    assert "Python environment reused" in out, out
    assert "stopping gracefully" in out, out
    old = unit(site.first)
    # The switch is done and the old worker has had its SIGTERM, yet it is still finishing the task in hand,
    # and takes no new one: the new worker, with the new code, runs the next task.
    assert state(site, old) == "deactivating", out
    assert state(site, unit(site.second)) == "active"
    enqueue(site, "record", "second")
    assert first_row(site, "/dbtask/second/%") == f"/dbtask/second/v2/tasks/{site.second}"
    assert not rows(site, "/slow-done/long/%")
    site.sql("insert into counter_hit (created, path) values (now(), '/go/long')")
    assert first_row(site, "/slow-done/long/%") == f"/slow-done/long/tasks/{site.first}"
    wait_state(site, old, "inactive")
    # The old worker's journal since its last start: SIGTERM, then the task finished, then a clean exit.
    journal = site.root(f"journalctl -u {old} --no-pager -o cat")
    journal = journal[journal.rfind("Starting worker worker_id="):]
    stop = journal.find("Received Terminated - shutting down gracefully")
    done = re.search(r"Task id=[0-9a-f-]+ path=counter\.tasks\.slow state=SUCCESSFUL", journal)
    assert 0 <= stop and done and stop < done.start(), journal
    assert "Deactivated successfully" in journal and "Failed with result" not in journal, journal


def test_a_rollback_runs_the_old_worker_code(site):
    out = site.rollback().stdout
    assert site.answering().endswith(site.first), out
    assert state(site, unit(site.first)) == "active", out
    wait_state(site, unit(site.second), "inactive")
    enqueue(site, "record", "rolled-back")
    assert first_row(site, "/dbtask/rolled-back/%") == f"/dbtask/rolled-back/v1/tasks/{site.first}"
