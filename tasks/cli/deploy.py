"""`fab deploy`: ship a release and move traffic to it; the switch that `fab rollback` and `fab config` share.

A deploy builds the new release next to the live one (as the build user, never with root power), migrates
(after a backup) only when its code has migrations the database lacks, starts it and asks it for the
health-check path over its own socket, and only then points the live link at it. Anything that fails before
that point leaves the live release serving and sets the new one aside in failed/ with its own error.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass


from .. import defaults, timestamps
from ..project import diagnose, django as project, migration_safety, source
from . import dryrun, hooks
from ..facts import envsize, releases
from ..facts.backups import dump_progress
from ..commands import processes as process_commands, release as commands, shell
from ..inventory import Inventory
from ..session.lock import who
from ..provisioning import jobs, processes, served, uv
from ..facts.releases import FAILED, GOOD, Release, ServerState
from ..connection.remote import ConnectionLost, RemoteError
from ..commands.render import TEMPLATES
from ..commands.database import db_address, unanswered
from ..commands.services import env_services
from ..session.run import DeployError, Session, last_lines

CHECK_SCRIPT = TEMPLATES / "deploy" / "release_check.py"
KNOWN_MIGRATIONS_SCRIPT = TEMPLATES / "deploy" / "known_migrations.py"  # put in front of CHECK_SCRIPT
MIB = 1024 * 1024
# Room a release needs: its archive unpacked (with collected static files and bytecode), plus a margin.
UNPACK_FACTOR = 4
# What Ctrl-C or a lost connection leaves of a deploy or a rollback.
INTERRUPTED = ("the live release is untouched unless the switch had begun; the next deploy cleans up what this "
               "one left")


class BackupFailed(DeployError):
    """The backup before a migrate failed: the migrate did not run, so there is nothing to reverse."""


# --- the steps every release change shares -------------------------------------------------------------

def go_live(session: Session, release: Release, state: ServerState, event: dict) -> None:
    """Start `release`, check its health on its own socket, start its processes (app.processes) and check they
    stay up, switch traffic to it, prove through nginx (by the site's name) that the site is now served by it,
    let the old one go: one round trip. A failure before the switch leaves the live release serving and
    working; a failed switch puts the processes back as they were."""
    inv, layout, old = session.inventory, session.layout, state.live
    procs = inv.app.processes
    name = session.health_host()
    # Behind a load balancer, this host's nginx serves the site over HTTP (the lb holds the certificate).
    local_https, lb = inv.terminates_tls(session.host), inv.lb_in_front_of(session.host)
    standby = state.after_switch(release, event).previous_good()  # the next rollback's target: kept warm
    ok, report, tail = session.run((
        "start", commands.start_and_check(layout, release.id, name, inv.app.health_check,
                                          https=inv.tls, timeout=defaults.HEALTH_TIMEOUT_S)), (
        "processes", process_commands.start_and_check(layout, release.id, procs, defaults.PROCESS_SETTLE_S)), (
        "switch", commands.switch(layout, release, old, event, inv.app.standby_minutes,
                                  backend_ready=state.backend == commands.backend_conf(layout),
                                  static_check=commands.static_served(layout, release, name, local_https),
                                  serving=(name, inv.app.health_check, local_https), standby=standby,
                                  processes=procs)))
    if not ok:
        if report.get("failed") == "processes":
            raise DeployError(f"{last_lines(tail)}\nprocesses after the failure (read back): "
                              f"{_states(report.get('process_states'))}")
        if report.get("failed") == "switch" and procs:
            stopped = (report.get("singletons_stopped") or "").split()
            _, back, _ = session.run(("put back", process_commands.put_back(layout, release.id, procs, stopped)))
            raise DeployError(f"{last_lines(tail)}\nprocesses put back (read back): "
                              f"{_states(back.get('process_states'))}")
        raise DeployError(last_lines(tail))
    warm = ", it was still running, nothing to start" if report.get("standby") else ""
    if "through_nginx" in report:
        repaired = (" (nginx was serving something else: it is reloaded now)" if report.get("repaired") else "")
        where = "this web host's own nginx" if lb else "nginx"
        behind = (f" (what one host's switch can prove: the load balancer {lb.peer_address} passes requests to it; "
                  "`fab status` there reads back whether each web host answers)" if lb else "")
        through = (f"; the site answers GET {inv.app.health_check} through {where} as {name} -> "
                   f"{report['through_nginx']}, from {release.id}{repaired}{behind}")
    else:
        through = "; not asked through nginx, which answers 503 in maintenance mode"
    session.reporter.step("changed", "switch", f"{release.id} is live" + (f" (was {old})" if old else "")
                          + f"; healthy on its own socket: GET {inv.app.health_check} -> "
                          f"{report.get('health', '?')}{warm}{through}{_standby_note(inv, standby, report)}")
    if procs:
        _report_processes(session, report)


def _standby_note(inv: Inventory, standby: str | None, report: dict) -> str:
    """What the switch left of the previous release: kept warm for a rollback, or, with app.standby_minutes 0,
    the instances systemd is stopping (as the switch read back) and the cold start a rollback then has."""
    minutes = inv.app.standby_minutes
    if minutes > 0:
        return f"; {standby} kept warm for `fab rollback` ({minutes} min, its web instance only)" if standby else ""
    stopping = (report.get("web_stopping") or "").split()
    return ("; no standby is kept (app.standby_minutes: 0)"
            + (f": systemd is stopping {', '.join(stopping)}" if stopping else "")
            + (f"; `fab rollback` starts {standby} cold first, which adds the app's start-up time"
               if standby else ""))


def _states(states: dict | None) -> str:
    """{unit: "ActiveState NRestarts"} as a message says it; "unknown" when nothing could be read."""
    if not states:
        return "unknown (could not be read)"
    return ", ".join(f"{unit} {value.split()[0] if value.split() else '?'}" for unit, value in states.items())


def _report_processes(session: Session, report: dict) -> None:
    """What the switch did with the processes, as systemd said after it."""
    procs = session.inventory.app.processes
    states = report.get("process_states") or {}
    started = _states(states)
    stopped = (report.get("singletons_stopped") or "").split()
    stopping = report.get("processes_stopping") or {}
    longest = max(p.stop_timeout for p in procs)
    session.reporter.step(
        "changed", "processes",
        f"started and up for {defaults.PROCESS_SETTLE_S} s with no restart (read back): {started}"
        + (f"; singleton(s) stopped before they started: {', '.join(stopped)}" if stopped else "")
        + (f"; the previous release's are stopping gracefully ({_states(stopping)}): SIGTERM, then up to "
           f"{longest} s to finish the task in hand before systemd kills them" if stopping else ""))


def _backup(session: Session, name: str, what: str) -> str:
    """A database dump before the schema changes; its path. `what` says what did not happen if it fails."""
    ok, report, tail = session.run(("backup", commands.backup(session.layout, session.database, name)),
                                   progress=dump_progress)
    if not ok:
        raise BackupFailed(f"the database backup failed, so {what}:\n{last_lines(tail)}")
    return report["backup"]


def migrate(session: Session, release_id: str, name: str) -> str:
    """Back up the database, then apply the release's migrations. Returns the backup's path."""
    dump = _backup(session, name, "nothing was migrated")
    ok, _, tail = session.run(("migrate", commands.migrate(session.layout, release_id, session.app)),
                              lines=commands.GATE_OUTPUT_LINES)
    if not ok:
        found = diagnose.diagnose("migrate", tail)
        raise DeployError(f"{found.headline}:\n{found.explain()}")
    return dump


def reverse(session: Session, code: Release, code_dir: str, extra: list[str], name: str) -> tuple[str, list[str]]:
    """Back up the database, then reverse `extra` with the code of release `code` (at `code_dir`: it must have
    their files) the way Django's executor plans it, and read the migrations table back: (the backup's path,
    the migrations the table no longer has). Fails, saying what is still applied and why, unless all are gone."""
    layout = session.layout
    dump = _backup(session, name, "nothing was reversed")
    ok, report, tail = session.run(("reverse", commands.reverse_migrations(layout, code.id, session.app, extra,
                                                                           code_dir)),
                                   lines=commands.GATE_OUTPUT_LINES)
    after = session.remote.gather([commands.applied_probe(session.database)])["applied"]
    if after is None:
        raise DeployError(f"could not read the migrations table after reversing {', '.join(extra)} with release "
                          f"{code.id}'s code, so whether they are still applied is unknown: "
                          f"{unanswered(session.inventory)} `fab status` compares them once it answers (a backup was "
                          f"taken first: {dump})")
    gone = [m for m in extra if m not in set(after)]
    still = [m for m in extra if m in set(after)]
    if ok and not still:
        return dump, gone
    raise DeployError(f"{len(gone)} reversed{(': ' + ', '.join(gone)) if gone else ''}; still applied "
                      f"(read back from the database): {', '.join(still) or 'none'}. "
                      f"{_reverse_problem(ok, report, tail, code.id)} (a backup was taken first: {dump})")


def _reverse_problem(ok: bool, report: dict, tail: str, code: str) -> str:
    """Why a reversal left migrations applied, from the reverse program's report (reverse_migrations.py)."""
    if report.get("reverse_unknown"):
        return (f"Release {code}'s code does not have the migration files of "
                f"{', '.join(report['reverse_unknown'])}, so it cannot reverse them; nothing was reversed")
    if report.get("reverse_extra") or report.get("reverse_left"):
        return (f"Django's plan to reverse them would also reverse {', '.join(report.get('reverse_extra') or [])} "
                "(which the release to run needs)" + (f" and leave {', '.join(report['reverse_left'])}"
                                                      if report.get("reverse_left") else "")
                + "; nothing was reversed")
    if report.get("reverse_failed"):
        return f"Reversing {report['reverse_failed']} failed: {report.get('why', '?')}"
    if ok:
        return f"The reverse command with release {code}'s code succeeded, yet the database still has them"
    return f"The reverse command failed:\n{last_lines(tail)}"


def code_with(session: Session, state: ServerState, extra: list[str]) -> tuple[Release, str]:
    """The release whose code has the files of the migrations `extra`, and its directory: the live one when it
    has them, else the newest other release in releases/, else one set aside in failed/ (a deploy that failed
    after migrating). Its Python environment must still be there."""
    wanted, gone = set(extra), []
    candidates = ([state.releases[state.live]] if state.live in state.releases else []) + [
        state.releases[r] for r in sorted(state.releases, reverse=True) if r != state.live]
    for release in candidates:
        if wanted <= releases.known_names(release):
            if release.requirements in state.venvs:
                return release, session.layout.release(release.id)
            gone.append(release.id)
    failed = session.remote.gather([commands.failed_releases_probe(session.layout)])["failed_releases"]
    for release_id, release in sorted(releases.parse_releases(failed or "").items(), reverse=True):
        if wanted <= releases.known_names(release):
            if release.requirements in state.venvs:
                return release, f"{session.layout.failed}/{release_id}"
            gone.append(release_id)
    unread = " (could not read the releases in failed/)" if failed is None else ""
    if gone:
        raise DeployError(f"the releases whose code has the files of {', '.join(extra)} ({', '.join(gone)}) "
                          "lost their Python environment, so none can reverse them: deploy the code that has "
                          "them again, then roll back with --migrate-back" + unread)
    raise DeployError(f"no release on the server has the files of {', '.join(extra)}{unread}, and reversing a "
                      "migration needs its code: deploy the code that has them, then roll back with "
                      "--migrate-back (or restore a backup from before they were applied, `fab restore`)")



def serving_words(state: ServerState) -> str:
    return f"{state.live} is still serving" if state.live else "the placeholder page still shows (nothing was live)"


def _free_mib(state: ServerState) -> str:
    free = state.free_kib
    return (f"{free[0] / 1024:.1f} MiB free in releases/, {free[-1] / 1024:.1f} MiB in venvs/" if free
            else "free space unknown")


def maintenance_note(session: Session, state: ServerState) -> None:
    """Say so when the site is in maintenance mode: the work goes on, visitors keep seeing the page."""
    if state.maintenance:
        session.reporter.line("  note      maintenance mode is on: visitors get the maintenance page (503) until "
                              "`fab maintenance off`; health checks go to the release's own socket")


def schema_warning(session: Session, state: ServerState) -> None:
    """Say so when the database has migrations the live code does not know (a deploy that could not undo
    them, or one killed after its migrate)."""
    ahead = state.schema_ahead()
    if ahead:
        session.reporter.line(f"  WARNING   the database schema is ahead of the live release {state.live}: "
                              f"{len(ahead)} migration(s) it does not know: {', '.join(ahead)}. Deploy the "
                              "code that has them, or reverse them with `fab rollback --to "
                              f"{state.live} --migrate-back`")


def _processes_drift(session: Session, state: ServerState) -> None:
    """Refuse, before anything is built, when the server's process units are not the inventory's app.processes."""
    if differ := processes.drift(session.inventory, state.process_files):
        raise DeployError(f"{processes.refusal(differ)}. Nothing was built or uploaded; {serving_words(state)}")


def _uv_drift(state: ServerState) -> None:
    """Refuse, before anything is built, on a server whose uv cannot build the release's venv."""
    if problem := uv.refusal(state.uv):
        raise DeployError(f"{problem}. Nothing was built or uploaded; {serving_words(state)}")


def _jobs_warning(session: Session, state: ServerState) -> None:
    """Say so when the inventory's scheduled jobs (app.jobs) are not what the server has: provision sets them up."""
    if differ := jobs.drift(session.inventory, state.job_files):
        session.reporter.line(f"  WARNING   the scheduled jobs on the server differ from the inventory's app.jobs "
                              f"({', '.join(differ)}): run `fab provision` to install them")


# --- deploy --------------------------------------------------------------------------------------------------



def preview(session: Session, src: source.Source, allow_unsafe_migrations: bool = False) -> None:
    """What a deploy of `src` would do now, found with read-only commands: nothing uploaded, built or written,
    and no deploy lock taken (so a deploy running meanwhile may change the picture)."""
    inventory, layout, reporter = session.inventory, session.layout, session.reporter
    state = session.state()
    release = _new_release(src, state, session.inventory.app.server)
    reporter.line(f"deploy --dry-run {src.ref} = {src.commit[:7]} to {session.host.address} ({inventory.source})")
    reporter.line("  note: read-only: no deploy lock taken, nothing uploaded or built")
    schema_warning(session, state)
    leftovers = state.unfinished()
    reporter.step("to build", "release", f"{release.id} ({len(src.archive) // 1024} KiB; the id names the time "
                  "the deploy runs)" + (f"; {len(leftovers)} unfinished release(s) from an interrupted deploy "
                                       "would be removed" if leftovers else ""))
    venv = ("reused (these requirements are built already)" if release.requirements in state.venvs
            else f"built with uv {uv.shown(state.uv)} (new requirements)")
    if release.requirements not in state.venvs and (refused := uv.refusal(state.uv)):
        venv = f"cannot be built: {refused}"
    reporter.step("to build", "python", f"environment {release.requirements} {venv}")
    hooks.preview(session, "after_build")
    managed = _managed_environment(session)
    ok, report, tail = session.run(("environment", commands.env_file(layout, managed, preview=True,
                                                                     services=env_services(inventory))))
    if not ok:
        raise DeployError(f"could not read the app's environment file:\n{last_lines(tail)}")
    shown = set(managed) - {name for name, _ in inventory.app.env}
    changes = dryrun.env_changes(report.get("env_before"), report["env_after"], shown)
    reporter.step("to change" if changes else "ok", "environment",
                  f"{layout.env_file}" + ("" if changes else " unchanged"))
    for line in changes:
        reporter.line(dryrun.INDENT + line)
    _preview_migrations(session, state, src)
    compatibility(session, state, src, allow_unsafe_migrations, dry_run=True)
    hooks.preview(session, "after_migrate")
    plan = pruning(inventory, state.after_deploy(release), release.id, state.live)
    removed = [f"{len(plan.old)} old release(s): {', '.join(plan.old)}" if plan.old else "",
               f"{len(plan.failed)} failed release(s): {', '.join(plan.failed)}" if plan.failed else "",
               f"{len(plan.venvs)} unused Python environment(s)" if plan.venvs else "",
               f"{len(plan.backups)} old database dump(s): {', '.join(plan.backups)}" if plan.backups else ""]
    removed = [dryrun.safe(text) for text in removed if text]
    reporter.step("to change" if removed else "ok", "cleanup",
                  "; ".join(removed) if removed else f"nothing to remove ({len(plan.kept)} release(s) kept)")
    reporter.step("to change", "switch", f"traffic would switch {'from ' + state.live + ' ' if state.live else ''}"
                  f"to {release.id} once it answers GET {inventory.app.health_check} healthy")
    _preview_processes(session, state, release)
    hooks.preview(session, "after_switch")


def _preview_processes(session: Session, state: ServerState, release: Release) -> None:
    """Which processes the deploy would start and stop, and whether a provision must come first."""
    procs = session.inventory.app.processes
    if differ := processes.drift(session.inventory, state.process_files):
        session.reporter.step("refused", "processes", processes.refusal(differ))
        return
    if not procs:
        return
    singles = [p.name for p in procs if p.singleton]
    session.reporter.step("to change", "processes", dryrun.safe(
        f"would start {', '.join(p.name for p in procs)} of {release.id} after its health check, and check they "
        f"stay up {defaults.PROCESS_SETTLE_S} s"
        + (f"; singleton(s) {', '.join(singles)} of other releases stopped first" if singles else "")
        + f"; after the switch would stop gracefully: {running_processes(session, state.process_units)}"))


def _preview_migrations(session: Session, state: ServerState, src: source.Source) -> None:
    """The project's migration files the database has not applied; those of packages are known once built."""
    if state.applied is None:
        session.reporter.step("unknown", "migrations", "could not read which migrations the database has applied: "
                              + unanswered(session.inventory))
        return
    pending = [m for m in dryrun.migration_files(src.archive) if m not in set(state.applied)]
    later = "those of installed packages are unknown until built (a dry run does not build)"
    if pending:
        session.reporter.step("to change", "migrations", dryrun.safe(
            f"{len(pending)} pending in the project's files, applied after a database backup: "
            f"{', '.join(pending)}; {later}"))
    else:
        session.reporter.step("ok", "migrations", f"none pending in the project's files; {later}")


def deploy_to(session: Session, src: source.Source, allow_unsafe_migrations: bool = False) -> str:
    inventory, host, reporter, stats = session.inventory, session.host, session.reporter, session.stats
    if host not in inventory.app_hosts:
        reporter.line(f"{host.address} ({', '.join(inventory.roles_of(host))}): no release runs here, nothing to "
                      "deploy")
        return ""
    layout = session.layout
    state = session.state()
    if state.applied is None:
        raise DeployError(f"could not read which migrations the database has applied: {unanswered(inventory)} "
                          f"Nothing was changed; {serving_words(state)}")
    if differ := served.drift(inventory, state.served_files, session.host):
        raise DeployError(f"{served.refusal(inventory, differ)}. Nothing was built or uploaded; {serving_words(state)}")
    _processes_drift(session, state)
    _uv_drift(state)
    _check_environment_size(session, state)
    release = _new_release(src, state, session.inventory.app.server)
    reporter.line(f"deploy {release.id} ({src.ref} = {src.commit[:7]}) to {host.address} "
                  f"({inventory.source})")
    schema_warning(session, state)
    maintenance_note(session, state)
    _jobs_warning(session, state)
    compatibility(session, state, src, allow_unsafe_migrations)
    with hooks.stopped_on_interrupt(session, release.id):  # its after_build hooks
        _build(session, state, src, release)
    applied_before = state.applied
    pending = releases.migrations_missing(applied_before, release)
    try:
        if pending:
            dump = migrate(session, release.id, f"{release.id}-before-migrate")
            reporter.step("changed", "migrations", f"{len(pending)} applied ({', '.join(pending[:4])}"
                          f"{', ...' if len(pending) > 4 else ''}) after a backup: {dump}")
        else:
            reporter.step("ok", "migrations", "nothing to apply")
        hooks.run(session, release.id, "after_migrate")
        release.status = GOOD
        event = {"time": timestamps.now(), "event": "live", "release": release.id, "previous": state.live,
                 "commit": src.commit, "by": who()}
        go_live(session, release, state, event)
    except DeployError as error:
        migrated = pending and not isinstance(error, BackupFailed)
        reversed_ = _undo_migrations(session, release, state, applied_before, pending) if migrated else ""
        _set_aside(session, release, str(error))
        serving = hooks.serving(session) if isinstance(error, hooks.HookFailed) else serving_words(state)
        raise DeployError(f"release {release.id} did not go live; {serving}{reversed_}. Its "
                          f"release is kept in {layout.failed}/.\n{error}") from None
    _prune(session, state.after_deploy(release), release.id, state.live)
    try:
        hooks.run(session, release.id, "after_switch")
    except hooks.HookFailed as error:
        raise DeployError(f"{hooks.is_live(session, release.id)}, but {error}") from None
    reporter.line(f"deployed {release.id} to {host.address}: {stats.summary()}")
    return release.id


def compatibility(session: Session, state: ServerState, src: source.Source, allow_unsafe: bool,
                  dry_run: bool = False) -> None:
    """Refuse, before anything is uploaded, pending migrations the live release's code would trip on while it
    still serves (from the migrate until the switch), unless the operator accepts that window; judged from the
    project's migration files alone, so the dry run (which builds nothing) says the same."""
    reporter, title = session.reporter, "migration safety"
    if state.live is None:
        reporter.step("ok", title, "no release is live: no old code runs on the new schema")
        return
    if state.applied is None:
        reporter.step("unknown", title, "could not read which migrations the database has applied, so which are "
                      "pending is unknown")
        return
    verdict = migration_safety.check(migration_safety.migration_files(src.archive), state.applied)
    if not verdict.pending and not verdict.unreadable:
        return
    caveats = migration_safety.caveats(verdict)
    if not verdict.findings:
        said = (f"compatible with the live release {state.live}: {', '.join(verdict.pending)}"
                if verdict.pending else "")
        reporter.step("unknown" if verdict.unreadable else "ok", title,
                      dryrun.safe("; ".join(text for text in (said, caveats) if text)))
        return
    flagged = [dryrun.safe(line) for line in migration_safety.flagged(verdict)]
    caveat = [dryrun.safe(caveats)] if caveats else []
    window = (f"the live release {state.live} would trip on the pending migrations while it still serves, from "
              "the migrate until the switch")
    if allow_unsafe or dry_run:
        status, said = (("to change" if dry_run else "WARNING", "accepted with --allow-unsafe-migrations")
                        if allow_unsafe else ("REFUSED", "the deploy would refuse"))
        reporter.step(status, title, f"{said}: {window}:")
        shown = flagged[:len(verdict.findings)] if allow_unsafe else flagged
        for line in shown + caveat + ([] if allow_unsafe else ["(--allow-unsafe-migrations accepts that window)"]):
            reporter.line(dryrun.INDENT + line)
        return
    raise DeployError(f"{window}:\n" + "\n".join(flagged + caveat) + f"\nNothing was changed; {serving_words(state)}. "
                      "To accept that window (requests to the live release failing on these until the switch), "
                      "deploy with --allow-unsafe-migrations")


def _check_environment_size(session: Session, state: ServerState) -> None:
    """Refuse, before anything is built or written, an environment the app could not start with."""
    sizes = envsize.after_deploy(state.env_sizes, _managed_environment(session),
                                 {name for name, _ in session.inventory.app.env})
    if problem := envsize.problem(sizes, envsize.limit_of(state.env_sizes)):
        raise DeployError(f"{problem}. Nothing was changed; {serving_words(state)}. {envsize.ADVICE[0].upper()}"
                          f"{envsize.ADVICE[1:]}")


def extra_requirements(requirements: bytes, server: str) -> list[str]:
    """What the server runs the app with that the project's requirements do not name: Gunicorn, and for ASGI
    Uvicorn's worker class and Uvicorn itself. They are part of the requirements hash, so a change of
    app.server builds a new environment."""
    text = requirements.decode(errors="replace")
    wanted = [("gunicorn", defaults.GUNICORN)]
    if server == "asgi":
        wanted += [("uvicorn[-_.]worker", defaults.UVICORN_WORKER), ("uvicorn", defaults.UVICORN)]
    # A name is named when it starts a line and is not the start of a longer name (uvicorn-worker is not uvicorn).
    return [pin for name, pin in wanted if not re.search(rf"(?im)^\s*{name}(?![A-Za-z0-9_.-]*[A-Za-z0-9])", text)]


def _new_id(commit: str, dirty: bool, state: ServerState) -> str:
    release_id = releases.new_release_id(commit, dirty)
    while release_id in state.releases or release_id in state.failed:  # two deploys of one commit in a second
        time.sleep(0.2)
        release_id = releases.new_release_id(commit, dirty)
    return release_id


def _new_release(src: source.Source, state: ServerState, server: str) -> Release:
    return release_for(src, state, server, _new_id(src.commit, src.dirty, state))


def release_for(src: source.Source, state: ServerState, server: str, release_id: str) -> Release:
    """Release `release_id` of `src` as this server records it (its environment's hash is its Python's)."""
    return Release(id=release_id, commit=src.commit, ref=src.ref, created=timestamps.now(), deployed_by=who(),
                   requirements=source.requirements_hash(src.requirements, state.python,
                                                         " ".join(extra_requirements(src.requirements, server))))


def _disk_full(session: Session, state: ServerState, what: str) -> DeployError:
    return DeployError(f"not enough disk space on {session.host.address} {what}: {_free_mib(state)}. Free some "
                       f"space (old database dumps in {session.layout.backups}/, `sudo apt-get clean`, "
                       "`sudo journalctl --vacuum-size=100M`) and deploy again; nothing of this release was kept, "
                       f"{serving_words(state)}")


def _upload(session: Session, state: ServerState, src: source.Source, release: Release) -> str:
    """The archive in releases/, after checking there is room for it; never a partial file left behind."""
    archive = commands.upload_path(session.layout, release.id)
    need = len(src.archive) * UNPACK_FACTOR + commands.LOW_SPACE_KIB * 1024

    def short_of_space(state: ServerState) -> bool:
        return bool(state.free_kib) and state.free_kib[0] * 1024 < need

    what = f"for release {release.id} (it needs about {need / MIB:.1f} MiB)"
    if short_of_space(state):
        raise _disk_full(session, state, what)
    try:
        session.remote.put(src.archive, archive)
    except ConnectionLost:
        raise
    except RemoteError:
        session.remote.run(shell.join("rm", "-f", archive))
        after = session.state()
        if short_of_space(after):
            raise _disk_full(session, after, what) from None
        raise
    return archive


def _build(session: Session, state: ServerState, src: source.Source, release: Release) -> None:
    """Upload, unpack, environment, Python venv, the after_build hooks, Django's checks and collectstatic: one
    round trip after the upload. Also clears what an interrupted deploy left behind."""
    inv, layout = session.inventory, session.layout
    archive = _upload(session, state, src, release)
    leftovers = state.unfinished()
    ok, report, tail = session.run(
        ("cleanup", commands.cleanup(layout, [r for r in state.running if r != state.live], leftovers, [], [],
                                     uploading=archive)),
        ("unpack", commands.unpack(layout, release, archive)),
        ("environment", commands.env_file(layout, _managed_environment(session),
                                          services=env_services(inv))),
        ("pip", commands.venv(layout, release.id, release.requirements, inv.app.requirements,
                              extra_requirements(src.requirements, inv.app.server), inv.proxy_environment)),
        # The project's own steps (compilemessages): in the release, before the checks seal it.
        *hooks.steps(session, release.id, "after_build"),
        ("checks", commands.release_check(layout, release.id, check_program())),
        lines=commands.GATE_OUTPUT_LINES,
    )
    if not ok:
        if (any(sign in tail for sign in commands.DISK_FULL_SIGNS)
                or report.get("free_kib", commands.LOW_SPACE_KIB) < commands.LOW_SPACE_KIB):
            _set_aside(session, release, tail, keep=False)
            state = session.state()
            raise DeployError(f"release {release.id}: the server ran out of disk space while building it "
                              f"({_free_mib(state)}). Free some space (old database dumps in {layout.backups}/, "
                              "`sudo apt-get clean`) and deploy again; the release was removed, "
                              f"{serving_words(state)}.\n{last_lines(tail)}")
        hooks.said(session, "after_build", report)
        _set_aside(session, release, tail)
        step = report.get("failed")
        if hook := hooks.failure(session, "after_build", report, tail):
            raise DeployError(f"release {release.id}: {hook}\n{hooks.serving(session)}; the release is kept in "
                              f"{layout.failed}/.") from None
        if step not in ("pip", "checks"):
            raise DeployError(f"release {release.id}: its {step} step failed; {serving_words(state)}. Kept in "
                              f"{layout.failed}/ for inspection.\n{last_lines(tail)}")
        found = diagnose.diagnose(step, tail, state.python, src.requirements.decode(errors="replace"),
                                  gate=report.get("gate", ""))
        log = commands.gate_log(f"{layout.failed}/{release.id}")
        raise DeployError(f"release {release.id}: {found.headline}; {serving_words(state)}. Kept in "
                          f"{layout.failed}/.\n{found.explain(log)}")
    release.migrations = report["migrations"]
    release.replaces = report.get("replaces", {})
    release.static_sample = report.get("static_sample", {})
    session.reporter.step("changed", "release", f"{release.id} unpacked ({len(src.archive) // 1024} KiB), "
                          f"Python environment {report['venv']}" + (f", {len(leftovers)} unfinished release(s) "
                                                                   f"from an interrupted deploy removed"
                                                                   if leftovers else ""))
    hooks.said(session, "after_build", report)
    _checks_passed(session, report, "manage.py check --deploy passed; static files collected")


def check_program() -> str:
    """The release check a deploy runs in a new release (and `fab config` in a new instance), as one program."""
    return project.check_program(KNOWN_MIGRATIONS_SCRIPT.read_text() + "\n" + CHECK_SCRIPT.read_text())


def _checks_passed(session: Session, report: dict, detail: str) -> None:
    """Say that the release check passed (`detail`), with the warnings and advice in its report."""
    warnings, advice = report["warnings"], report.get("readiness", [])
    if warnings:  # one per line: each is a thing to fix, not a wall of text
        detail += f"; {len(warnings)} warning(s):" + "".join(f"\n            {w}" for w in warnings)
    session.reporter.step("ok", "checks", detail)
    if advice:  # the readiness check's findings that do not stop a release, one per line too
        session.reporter.step("ok", "readiness", f"{len(advice)} thing(s) to improve in the settings:"
                              + "".join(f"\n            - {text}" for text in advice))


def _managed_environment(session: Session) -> dict[str, str]:
    """The variables gangway keeps in shared/env, the inventory's app.env among them (a name taken out of it
    leaves the file at the next deploy); the operator's own lines are left alone."""
    return project.managed_environment(session.inventory.app, session.host.address,
                                       session.inventory.database, db_address(session.inventory),
                                       session.inventory.media)


def _undo_migrations(session: Session, release: Release, state: ServerState, applied_before: list[str],
                     pending: list[str]) -> str:
    """Reverse what this deploy applied, with the new release's code (it holds the reverse operations), as
    Django's executor plans it, and say what the migrations table shows afterwards. When that cannot be done,
    say loudly what is still applied, why, and how to finish."""
    after = session.remote.gather([commands.applied_probe(session.database)])["applied"]
    finish = (f"`fab rollback --to {state.live} --migrate-back` reverses them with this release's code (kept in "
              f"{session.layout.failed}/)" if state.live else "the next deploy of fixed code starts from there")
    if after is None:
        return (f".\nWARNING: could not read the migrations table after the failure, so whether the migrations "
                f"it meant to apply ({', '.join(pending)}) are applied is unknown: {unanswered(session.inventory)} "
                f"Once it answers, `fab status` compares the schema with the live code, and {finish}")
    extra = releases.migrations_to_reverse(after, Release("before", migrations=applied_before))
    if not extra:
        return ""
    try:
        _, gone = reverse(session, release, session.layout.release(release.id), extra,
                          f"{release.id}-before-reverse")
    except DeployError as error:
        return (f".\nWARNING: the migrations it applied could not all be reversed: {error}\nThe live code runs "
                f"on a schema it does not know until they are; once the cause is fixed, {finish} (database "
                f"backups are in {session.layout.backups}/)")
    return f"; the {len(gone)} migration(s) it applied were reversed (read back from the database: {', '.join(gone)})"


def _set_aside(session: Session, release: Release, error: str, keep: bool = True) -> None:
    release.status, release.error = FAILED, error[-2000:]
    event = {"time": timestamps.now(), "event": "failed", "release": release.id, "by": who(), "error": error[-300:]}
    session.run(("set aside", commands.set_aside(session.layout, release, event, keep)))
    session.reporter.step("FAILED", "release", f"{release.id} " + (f"set aside in {session.layout.failed}/" if keep
                                                                   else "removed") + _processes_now(session))


def _processes_now(session: Session) -> str:
    """After a failure: which release's processes run, read from systemd ("" when the app has none)."""
    if not session.inventory.app.processes:
        return ""
    units = session.remote.gather([process_commands.units_probe(session.layout)])["process_units"]
    return f"; processes running now (read back): {running_processes(session, units)}"


def running_processes(session: Session, units: dict[str, str] | None) -> str:
    """The active process units of this app's process types, by release; what could not be read says so."""
    if units is None:
        return "unknown (systemctl could not list them)"
    names = {p.name for p in session.inventory.app.processes}
    by_release: dict[str, list[str]] = {}
    for unit, active in sorted(units.items()):
        parts = process_commands.split_unit(session.layout, unit)
        if parts and parts[0] in names and active in ("active", "activating", "reloading"):
            by_release.setdefault(parts[1], []).append(parts[0] + ("" if active == "active" else f" ({active})"))
    return "; ".join(f"{', '.join(n)} of {r}" for r, n in by_release.items()) or "none"


@dataclass
class Pruning:
    """What a deploy removes once its release is live, beyond what the inventory says to keep."""
    kept: list[str]
    old: list[str]
    failed: list[str]
    venvs: list[str]
    backups: list[str]


def pruning(inventory: Inventory, state: ServerState, live: str, previous: str | None) -> Pruning:
    app = inventory.app
    old = releases.to_prune(state, app.keep_releases, live, previous)
    kept = [r for r in state.releases if r not in old]
    return Pruning(kept=kept, old=old, failed=releases.failed_to_prune(state.failed, app.keep_failed),
                   venvs=releases.venvs_to_prune(state, kept),
                   backups=releases.backups_to_prune(state.backups, app.keep_backups))


def _prune(session: Session, state: ServerState, live: str, previous: str | None) -> None:
    plan = pruning(session.inventory, state, live, previous)
    kept, old, failed, venvs, backups = plan.kept, plan.old, plan.failed, plan.venvs, plan.backups
    if old or failed or venvs or backups:
        ok, _, tail = session.run(("prune", commands.cleanup(session.layout, [], old, failed, venvs, backups)),
                                  ("static", commands.prune_static(session.layout, kept) if old else "true"))
        if not ok:
            raise DeployError(f"pruning failed:\n{last_lines(tail)}")
    session.reporter.step("changed" if old or failed or backups else "ok", "cleanup",
                          f"{len(kept)} release(s) kept" + (f", {len(old)} old removed" if old else "")
                          + (f", {len(failed)} old failed removed" if failed else "")
                          + (f", {len(backups)} old database dump(s) removed" if backups else ""))


# --- a new instance of the live code (fab config) ----------------------------------------------------------

def relaunch(session: Session, state: ServerState, why: str) -> str:
    """Start the live release's code anew (a new release id, the same files and venv), so it reads the app's
    environment again, and switch to it once it answers healthy: the zero-downtime way to apply changed
    variables. Before it starts, the gates of a deploy's release check that the environment decides run with
    the new variables (the readiness check, `manage.py check --deploy`); the others (pip, collectstatic, the
    migrations, the bytecode, the after_build hooks) depend on the code alone, which is the live release's. On
    failure the new instance is removed and what the live release is doing is read back. Call it holding the
    deploy lock; returns the new release's id."""
    live = state.releases.get(state.live or "")
    if live is None:
        raise DeployError("no release is live yet: nothing to restart")
    layout = session.layout
    release = dataclasses.replace(live, id=_new_id(live.commit, live.id.endswith("-dirty"), state),
                                  status=releases.BUILDING, created=timestamps.now(), deployed_by=who(), error="")
    ok, _, tail = session.run(("copy", commands.clone_release(layout, live.id, release)))
    if not ok:
        session.run(("remove", commands.cleanup(layout, [], [release.id], [], [])))
        raise DeployError(f"could not start a new instance of {live.id}:\n{last_lines(tail)}")
    ok, report, tail = session.run(("checks", commands.settings_check(layout, release.id, check_program())),
                                   lines=commands.GATE_OUTPUT_LINES)
    if not ok:
        session.run(("remove", commands.cleanup(layout, [], [release.id], [], [])))
        found = diagnose.diagnose("checks", tail, state.python, gate=report.get("gate", ""))
        raise DeployError(f"a new instance of {live.id} was not started: {found.headline}, with the new "
                          f"environment; {_live_now(session, live.id)}:\n{found.explain()}")
    _checks_passed(session, report, "the readiness check and manage.py check --deploy passed with the new "
                                    "environment")
    release.status = GOOD
    event = {"time": timestamps.now(), "event": "live", "release": release.id, "previous": live.id, "commit": live.commit,
             "by": who(), "why": why}
    try:
        go_live(session, release, state, event)
    except DeployError as error:
        _set_aside(session, release, str(error), keep=False)
        raise DeployError(f"the new instance of {live.id} did not go live; {_live_now(session, live.id)}:"
                          f"\n{error}") from None
    return release.id


def _live_now(session: Session, live: str) -> str:
    """After a relaunch that failed: whether `live` is still the live release and running, read back."""
    facts = session.remote.gather([commands.live_probe(session.layout),
                                   commands.unit_state_probe(session.layout, live)])
    link, active = facts["live"], facts["unit_state"]
    if link != live:
        return (f"the live link points at {link or 'nothing'} (read back), not at {live}: see `fab status` and "
                "`fab releases`")
    if active is None:
        return f"{live} is still the live release; whether it is running could not be read back"
    if active != "active":
        return (f"{live} is still the live release but it is NOT running (read back: systemd says {active}), so "
                f"the site does not answer: `fab rollback --to {live}` starts it")
    return f"{live} is still serving (read back: live, its instance {active})"
