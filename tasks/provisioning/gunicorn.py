"""Gunicorn under systemd: a template unit (one instance per release) and its config file."""

from __future__ import annotations

from pathlib import Path

from . import Server
from .. import defaults, sizing
from ..commands.render import render
from ..inventory import App
from ..facts.steps import File, Step


def unit_file(server: Server) -> str:
    layout = server.layout
    return render("systemd/app@.service.j2", app=server.inventory.app.name, releases=layout.releases,
                  env_file=layout.env_file, config_env=layout.config_env, gunicorn_conf=layout.gunicorn_conf,
                  module=server.inventory.app.module, media=layout.media, most_workers=defaults.MOST_WORKERS,
                  tasks_max=defaults.GUNICORN_TASKS_MAX)


def config_file(server: Server) -> str:
    """Gunicorn's settings; its worker count is worked out on the server at each start (tasks/sizing.py says
    why), from the inventory's numbers written here as Python literals (validated ints, a bool, None)."""
    app = server.inventory.app
    return render("gunicorn/gunicorn.conf.py.j2", app=app.name,
                  worker_class=defaults.UVICORN_WORKER_CLASS if app.server == "asgi" else "",
                  sizing=Path(sizing.__file__).read_text().rstrip("\n"), workers=repr(app.workers),
                  standby=repr(app.standby_minutes > 0), processes=len(app.processes))


def workers_note(app: App) -> str:
    """How many workers the config runs, as provision's note says it."""
    if app.workers:
        return f"{app.workers} of them: app.workers"
    count = len(app.processes)
    return ("as many as the server's cores and memory allow at each start, counting "
            + ("the standby" if app.standby_minutes > 0 else "no standby (app.standby_minutes: 0)")
            + (f" and {count} process type{'s' if count > 1 else ''}" if count else ""))


def service(server: Server) -> Step:
    layout, app = server.layout, server.inventory.app
    workers = "Uvicorn workers" if app.server == "asgi" else "sync workers"
    return Step("gunicorn service", [
        File(layout.gunicorn_conf, config_file(server)),
        File(layout.unit_path, unit_file(server)),
    ], after=["systemctl daemon-reload"],
        note=f"{layout.unit_template}, {app.module} with {workers} ({workers_note(app)}), sandboxed, restarts "
             "on failure",
        changed_note="a running release uses it from its next start: the next fab deploy")
