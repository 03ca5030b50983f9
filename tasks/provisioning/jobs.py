"""Scheduled management commands (the inventory's app.jobs): a service and a timer per job, and nothing left
of a job that is no longer in the inventory. `fab deploy` compares the server's unit files with these (`drift`)
and says when a provision is due."""

from __future__ import annotations

import hashlib

from . import Server
from ..inventory import Inventory, Job
from ..layout import UNIT_DIR, Layout
from ..commands.render import render
from ..commands.shell import join, q
from ..facts.steps import Change, Check, Facts, File, Probe, Step

# The release is read when the job starts: the live one then, whatever was live at provision time.
LAUNCHER = ('release=$(readlink -f {current}) && cd "$release" && '
            'GANGWAY_RELEASE="${{release##*/}}" DJANGO_STATIC_ROOT="$release/static" '
            'exec "$release/.venv/bin/python" manage.py "$@"')


def service_file(inventory: Inventory, job: Job) -> str:
    layout = Layout(inventory.app.name)
    return render("systemd/job.service.j2", app=inventory.app.name, job=job.name,
                  unit=layout.job_unit(job.name), command=job.command, command_line=join(*job.command),
                  root=layout.root, current=layout.current, env_file=layout.env_file, config_env=layout.config_env,
                  media=layout.media, launcher=LAUNCHER.format(current=q(layout.current)))


def timer_file(inventory: Inventory, job: Job) -> str:
    return render("systemd/job.timer.j2", app=inventory.app.name, job=job.name,
                  unit=Layout(inventory.app.name).job_unit(job.name), schedule=job.schedule)


def unit_files(inventory: Inventory) -> dict[str, str]:
    """{unit file name: content} of every job in the inventory."""
    files = {}
    for job in inventory.app.jobs:
        unit = Layout(inventory.app.name).job_unit(job.name)
        files[f"{unit}.service"] = service_file(inventory, job)
        files[f"{unit}.timer"] = timer_file(inventory, job)
    return files


def _parse_words(out: str, rc: int) -> dict[str, str]:
    """Lines of "NAME REST" into {NAME: REST}."""
    found = {}
    for line in out.splitlines():
        name, _, rest = line.partition(" ")
        if name:
            found[name] = rest.strip()
    return found


def units_probe(layout: Layout) -> Probe:
    """Every job unit file of this app, and for each timer whether it is enabled and running."""
    prefix = f"{UNIT_DIR}/{layout.job_unit_prefix}"
    return Probe("job_units", f'for f in {q(prefix)}*.service {q(prefix)}*.timer; do [ -e "$f" ] || continue; '
                              'n=${f##*/}; case "$n" in *.timer) s="$(systemctl is-enabled "$n" 2>/dev/null) '
                              '$(systemctl is-active "$n" 2>/dev/null)";; *) s=;; esac; echo "$n $s"; done',
                 _parse_words)


def files_probe(layout: Layout) -> Probe:
    """{unit file name: sha256} of this app's job units on the server (for `drift`)."""
    prefix = f"{UNIT_DIR}/{layout.job_unit_prefix}"
    return Probe("job_files", f'for f in {q(prefix)}*.service {q(prefix)}*.timer; do [ -f "$f" ] || continue; '
                              'echo "${f##*/} $(sha256sum < "$f" | cut -c1-64)"; done', _parse_words)


def drift(inventory: Inventory, on_server: dict[str, str]) -> list[str]:
    """The job unit files a provision would write or remove: the inventory's app.jobs against the server's."""
    wanted = {name: hashlib.sha256(content.encode()).hexdigest() for name, content in unit_files(inventory).items()}
    return sorted(name for name in wanted.keys() | on_server.keys() if wanted.get(name) != on_server.get(name))


def schedule_units(server: Server, files: dict[str, File]):
    """Remove the units of jobs that left the inventory; (re)start the timers that are new, changed or off."""
    def decide(units: dict[str, str], facts: Facts) -> list[Change]:
        changes = []
        stale = sorted(name for name in units if name not in files)
        for name in stale:
            stop = [join("systemctl", "disable", "--now", name)] if name.endswith(".timer") else []
            changes.append(Change(f"{name} removed (no longer in the inventory)",
                                  (*stop, join("rm", "-f", f"{UNIT_DIR}/{name}"))))
        for job in server.inventory.app.jobs:
            unit = server.layout.job_unit(job.name)
            rewritten = any(files[f"{unit}.{kind}"].plan(facts) for kind in ("service", "timer"))
            if rewritten or units.get(f"{unit}.timer") != "enabled active":
                changes.append(Change(f"{unit}.timer started ({job.schedule})",
                                      ("systemctl daemon-reload", join("systemctl", "enable", f"{unit}.timer"),
                                       join("systemctl", "restart", f"{unit}.timer"))))
        return changes + ([Change("systemd reloaded", ("systemctl daemon-reload",))] if stale else [])
    return decide


def scheduled(server: Server) -> Step:
    jobs = server.inventory.app.jobs
    files = {name: File(f"{UNIT_DIR}/{name}", content) for name, content in unit_files(server.inventory).items()}
    names = ", ".join(f"{job.name} ({job.schedule})" for job in jobs)
    return Step("scheduled jobs", [*files.values(), Check(units_probe(server.layout), schedule_units(server, files))],
                note=f"{names}; in the live release as {server.inventory.app.name}" if jobs
                else "none in the inventory (app.jobs)")
