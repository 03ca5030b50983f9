"""Scheduled management commands (the inventory's app.jobs): a service and a timer per job, and nothing left
of a job that is no longer in the inventory."""

from __future__ import annotations

from . import Server
from ..inventory import Job
from ..render import render
from ..shell import join, q
from ..steps import Change, Check, Facts, File, Probe, Step

UNIT_DIR = "/etc/systemd/system"

# The release is read when the job starts: the live one then, whatever was live at provision time.
LAUNCHER = ('release=$(readlink -f {current}) && cd "$release" && '
            'GANGWAY_RELEASE="${{release##*/}}" DJANGO_STATIC_ROOT="$release/static" '
            'exec "$release/.venv/bin/python" manage.py "$@"')


def service_file(server: Server, job: Job) -> str:
    layout = server.layout
    return render("systemd/job.service.j2", app=server.inventory.app.name, job=job.name,
                  unit=layout.job_unit(job.name), command=job.command, command_line=join(*job.command),
                  root=layout.root, current=layout.current, env_file=layout.env_file, config_env=layout.config_env,
                  media=layout.media, launcher=LAUNCHER.format(current=q(layout.current)))


def timer_file(server: Server, job: Job) -> str:
    return render("systemd/job.timer.j2", app=server.inventory.app.name, job=job.name,
                  unit=server.layout.job_unit(job.name), schedule=job.schedule)


def parse_units(out: str, rc: int) -> dict[str, str]:
    """{file name: timer state} of the job units on the server: "enabled active" for a running timer."""
    units = {}
    for line in out.splitlines():
        name, _, state = line.partition(" ")
        if name:
            units[name] = state.strip()
    return units


def units_probe(server: Server) -> Probe:
    """Every job unit file of this app, and for each timer whether it is enabled and running."""
    prefix = f"{UNIT_DIR}/{server.layout.job_unit_prefix}"
    return Probe("job_units", f'for f in {q(prefix)}*.service {q(prefix)}*.timer; do [ -e "$f" ] || continue; '
                              'n=${f##*/}; case "$n" in *.timer) s="$(systemctl is-enabled "$n" 2>/dev/null) '
                              '$(systemctl is-active "$n" 2>/dev/null)";; *) s=;; esac; echo "$n $s"; done',
                 parse_units)


def schedule_units(server: Server, files: dict[str, File]):
    """Remove the units of jobs that left the inventory; (re)start the timers that are new, changed or off."""
    def decide(units: dict[str, str], facts: Facts) -> list[Change]:
        changes = []
        stale = sorted(name for name in units if name.rsplit(".", 1)[0] not in
                       {server.layout.job_unit(job.name) for job in server.inventory.app.jobs})
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
    layout = server.layout
    jobs = server.inventory.app.jobs
    files = {}
    for job in jobs:
        unit = layout.job_unit(job.name)
        files[f"{unit}.service"] = File(f"{UNIT_DIR}/{unit}.service", service_file(server, job))
        files[f"{unit}.timer"] = File(f"{UNIT_DIR}/{unit}.timer", timer_file(server, job))
    names = ", ".join(f"{job.name} ({job.schedule})" for job in jobs)
    return Step("scheduled jobs", [*files.values(), Check(units_probe(server), schedule_units(server, files))],
                note=f"{names}; in the live release as {server.inventory.app.name}" if jobs
                else "none in the inventory (app.jobs)")
