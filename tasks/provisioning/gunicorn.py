"""Gunicorn under systemd: a template unit (one instance per release) and its config file."""

from __future__ import annotations

from . import Server
from .. import defaults
from ..commands.render import render
from ..facts.steps import File, Step


def unit_file(server: Server) -> str:
    layout = server.layout
    return render("systemd/app@.service.j2", app=server.inventory.app.name, releases=layout.releases,
                  env_file=layout.env_file, config_env=layout.config_env, gunicorn_conf=layout.gunicorn_conf,
                  module=server.inventory.app.module, media=layout.media)


def config_file(server: Server) -> str:
    asgi = server.inventory.app.server == "asgi"
    return render("gunicorn/gunicorn.conf.py.j2", app=server.inventory.app.name,
                  worker_class=defaults.UVICORN_WORKER_CLASS if asgi else "")


def service(server: Server) -> Step:
    layout, app = server.layout, server.inventory.app
    workers = "Uvicorn workers" if app.server == "asgi" else "sync workers"
    return Step("gunicorn service", [
        File(layout.gunicorn_conf, config_file(server)),
        File(layout.unit_path, unit_file(server)),
    ], after=["systemctl daemon-reload"],
        note=f"{layout.unit_template}, {app.module} with {workers}, sandboxed, restarts on failure",
        changed_note="a running release uses it from its next start: the next fab deploy")
