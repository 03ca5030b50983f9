"""Scheduled backups: a systemd timer that dumps the app's database daily and prunes the old dumps.

APP-backup.timer starts APP-backup.service, which runs templates/backups/backup.py as root: pg_dump (custom
format, compressed) into backups/ as TIMESTAMP-daily.dump, owner-only, written under a .part name and renamed
when complete; then the scheduled dumps beyond the inventory's retention are removed. The timer is persistent
(a run missed while the server was off happens at boot) and randomly delayed a little.
"""

from __future__ import annotations

import json

from . import Server
from ..commands.database import client as database_client
from .. import defaults
from ..commands.render import TEMPLATES, render
from ..facts.steps import Change, Check, File, Probe, Step
from ..commands.shell import q

SYSTEMD = "/etc/systemd/system"


def service_file(server: Server) -> str:
    layout, backups = server.layout, server.inventory.backups
    return render("systemd/backup.service.j2", app=layout.app, backups=layout.backups, script=layout.backup_script,
                  command=layout.backup_command, local=database_client(server.inventory, server.host).url is None,
                  keep_daily=backups.keep_daily, keep_weekly=backups.keep_weekly)


def timer_file(server: Server) -> str:
    return render("systemd/backup.timer.j2", app=server.layout.app, time=server.inventory.backups.time,
                  delay=defaults.BACKUP_DELAY)


def timer_probe(timer: str) -> Probe:
    return Probe(f"timer:{timer}", f"systemctl is-enabled {q(timer)}; systemctl is-active {q(timer)}",
                 lambda out, rc: out.split() == ["enabled", "active"])


def schedule(server: Server) -> Step:
    layout, backups = server.layout, server.inventory.backups
    unit = layout.backup_unit
    timer = f"{unit}.timer"
    probe = timer_probe(timer)

    def enable(running: bool, facts) -> list[Change]:
        return [] if running else [Change(f"{timer} enabled", ())]  # `after` enables and (re)starts it

    return Step("scheduled backups", [
        File(layout.backup_script, (TEMPLATES / "backups/backup.py").read_text(), mode="700"),
        File(layout.backup_command, json.dumps(database_client(server.inventory, server.host).argv(
            "pg_dump", "--format=custom", dumper=True)) + "\n", mode="600"),
        File(f"{SYSTEMD}/{unit}.service", service_file(server)),
        File(f"{SYSTEMD}/{timer}", timer_file(server)),
        Check(probe, enable),
    ], after=["systemctl daemon-reload", f"systemctl enable --quiet {q(timer)}", f"systemctl restart {q(timer)}"],
        note=f"{timer}: daily at {backups.time}, keeps {backups.keep_daily} daily and {backups.keep_weekly} weekly "
             f"dumps in {layout.backups}/")
