"""`fab deploy`, `fab rollback`, `fab releases`, `fab unlock`: ship releases and move traffic between them.

A deploy builds the new release next to the live one, migrates (after a backup) only when its code has
migrations the database lacks, starts it and asks it for the health-check path over its own socket, and
only then points nginx at it. Anything that fails before that point leaves the live release serving and
sets the new one aside in failed/ with its own error.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fabric import task
from invoke.exceptions import Exit

from tasks import defaults, release_commands as commands, releases, shell, source, targets
from tasks.inventory import Host, Inventory, InventoryError
from tasks.layout import Layout
from tasks.lock import DeployLock, describe_holder, unlock_command, who
from tasks.releases import FAILED, GOOD, Release, ServerState
from tasks.remote import Remote, RemoteError, Stats
from tasks.runner import Reporter

CHECK_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "deploy" / "release_check.py"


class DeployError(RemoteError):
    """A deploy or rollback that stopped; the live release is still serving."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Session:
    """One server, logged in, with what a deploy needs to talk about it."""
    inventory: Inventory
    host: Host
    remote: Remote
    reporter: Reporter

    @property
    def stats(self) -> Stats:
        return self.remote.stats

    @property
    def layout(self) -> Layout:
        return Layout(self.inventory.app.name)

    @property
    def app(self) -> str:
        return self.inventory.app.name

    def state(self) -> ServerState:
        facts = self.remote.gather(commands.state_probes(self.layout))
        if not facts["provisioned"]:
            raise DeployError(f"{self.host.address} is not provisioned for {self.app}: run `fab provision` first")
        return ServerState(releases=releases.parse_releases(facts["releases"]), failed=sorted(facts["failed"]),
                           live=releases.parse_live(facts["backend"] or ""), running=facts["running"],
                           history=releases.parse_history(facts["history"]), venvs=facts["venvs"],
                           python=facts["python"], applied=facts["applied"], backups=facts["backups"])

    def applied_migrations(self) -> list[str]:
        return self.remote.check(commands.applied_migrations(self.app), "reading the applied migrations"
                                 ).stdout.split()

    def health_host(self) -> str:
        return self.inventory.app.domains[0] if self.inventory.app.domains else self.host.address

    def go_live(self, release: Release, old: str | None, event: dict) -> None:
        """Start `release`, check its health, switch traffic to it, stop `old`: one round trip."""
        inv = self.inventory
        script = shell.script(
            commands.start_and_check(self.layout, release.id, self.health_host(), inv.app.health_check,
                                     https=inv.tls, timeout=defaults.HEALTH_TIMEOUT_S),
            commands.switch(self.layout, release, old, event, inv.deploy_user, inv.app.standby_minutes))
        result = self.remote.run(script)
        if not result.ok:
            raise DeployError(result.tail(60))
        said = result.stdout.strip().splitlines()
        health = next((line for line in said if line.startswith("healthy")), "")
        warm = ", it was still running, nothing to start" if any("standby" in line for line in said) else ""
        self.reporter.step("changed", "switch", f"{release.id} is live" + (f" (was {old})" if old else "")
                           + f"; {health}{warm}")

    def migrate(self, release_id: str, name: str, targets_: dict[str, str] | None = None) -> str:
        """Back up the database, then migrate (or reverse to `targets_`). Returns the backup's path."""
        dump = self.remote.run(commands.backup(self.layout, self.app, name))
        if not dump.ok:
            raise DeployError(f"the database backup failed, so nothing was migrated:\n{dump.tail()}")
        result = self.remote.run(shell.script(commands.migrate(self.layout, release_id, self.app, targets_)))
        if not result.ok:
            raise DeployError(f"manage.py migrate failed:\n{result.tail(40)}")
        return dump.stdout.strip().splitlines()[-1]


def _on_each_host(c, inventory: str | None, what: str, action: Callable[[Session], None],
                  before: Callable[[Inventory], None] | None = None) -> None:
    """Select the hosts the Fabric way, log in to each, run `action`, and turn failures into one clear line.
    `before` runs once, before any connection (local checks that should fail fast)."""
    reporter = Reporter()
    try:
        inv, hosts = targets.select(c, inventory)
        if before:
            before(inv)
        for host in hosts:
            session = Session(inv, host, targets.login(host, inv, Stats(), c.config), reporter)
            try:
                action(session)
            finally:
                session.remote.close()
    except (InventoryError, RemoteError, source.SourceError) as error:
        raise Exit(f"{what} failed: {error}", code=1) from None


def _serving(state: ServerState) -> str:
    return f"{state.live} is still serving" if state.live else "the placeholder page still shows (nothing was live)"


# --- deploy --------------------------------------------------------------------------------------------------

@task(auto_shortflags=False, help={
    "inventory": "inventory name (inventory/NAME.yaml) or path; default: production",
    "ref": "the git commit, branch or tag to ship (default: HEAD)",
    "allow-dirty": "ship uncommitted changes to tracked files too, instead of refusing",
})
def deploy(c, inventory=None, ref="HEAD", allow_dirty=False):
    """Ship a release: build it, migrate after a backup, switch traffic once it answers healthy."""
    shipped = []  # the project, read once, before connecting to any host

    def read(inv: Inventory) -> None:
        shipped.append(source.read(inv.app.source, ref, allow_dirty, inv.app.requirements))

    _on_each_host(c, inventory, "deploy", lambda session: deploy_to(session, shipped[0]), before=read)


def deploy_to(session: Session, src: source.Source) -> str:
    inventory, host, reporter, stats = session.inventory, session.host, session.reporter, session.stats
    layout = session.layout
    try:
        with DeployLock(session.remote, layout, f"deploy {src.commit[:7]}"):
            state = session.state()
            release = _new_release(src, state)
            reporter.line(f"deploy {release.id} ({src.ref} = {src.commit[:7]}) to {host.address} "
                          f"({inventory.source})")
            _build(session, state, src, release)
            applied_before = state.applied
            pending = [m for m in release.migrations if m not in set(applied_before)]
            try:
                if pending:
                    dump = session.migrate(release.id, f"{release.id}-before-migrate")
                    reporter.step("changed", "migrations", f"{len(pending)} applied ({', '.join(pending[:4])}"
                                  f"{', ...' if len(pending) > 4 else ''}) after a backup: {dump}")
                else:
                    reporter.step("ok", "migrations", "nothing to apply")
                release.status = GOOD
                event = {"time": _now(), "event": "live", "release": release.id, "previous": state.live,
                         "commit": src.commit, "by": who()}
                session.go_live(release, state.live, event)
            except DeployError as error:
                reversed_ = _undo_migrations(session, release, applied_before) if pending else ""
                _set_aside(session, release, str(error))
                raise DeployError(f"release {release.id} did not go live; {_serving(state)}{reversed_}. Its "
                                  f"release is kept in {layout.failed}/.\n{error}") from None
            _prune(session, state.after_deploy(release), release.id, state.live)
    except KeyboardInterrupt:
        raise Exit("deploy interrupted: the live release is untouched unless the switch had begun; the next "
                   "deploy cleans up what this one left", code=130) from None
    reporter.line(f"deployed {release.id} to {host.address}: {stats.summary()}")
    return release.id


def _extra_requirements(src: source.Source) -> str:
    """Gunicorn, when the project's requirements do not name it."""
    return "" if re.search(r"(?im)^\s*gunicorn\b", src.requirements.decode(errors="replace")) else defaults.GUNICORN


def _new_release(src: source.Source, state: ServerState) -> Release:
    release_id = releases.new_release_id(src.commit, src.dirty)
    while release_id in state.releases or release_id in state.failed:  # two deploys of one commit in a second
        time.sleep(0.2)
        release_id = releases.new_release_id(src.commit, src.dirty)
    return Release(id=release_id, commit=src.commit, ref=src.ref, created=_now(), deployed_by=who(),
                   requirements=source.requirements_hash(src.requirements, state.python,
                                                         _extra_requirements(src)))


def _build(session: Session, state: ServerState, src: source.Source, release: Release) -> None:
    """Upload, unpack, environment, Python venv, Django's checks and collectstatic: one round trip after
    the upload. Also clears what an interrupted deploy left behind."""
    inv, layout = session.inventory, session.layout
    archive = f"{layout.releases}/{release.id}.tar.gz"
    session.remote.put(src.archive, archive)
    stray_units = [r for r in state.running if r != state.live]
    leftovers = state.unfinished()
    extra = _extra_requirements(src)
    script = shell.script(
        commands.cleanup(layout, stray_units, leftovers, [], []),
        commands.unpack(layout, release, archive, inv.deploy_user),
        commands.env_file(layout, _managed_environment(session)),
        commands.venv(layout, release.id, release.requirements, inv.app.requirements, shell.q(extra) if extra else "",
                      inv.deploy_user, inv.proxy_environment),
        commands.release_check(layout, release.id, inv.deploy_user, CHECK_SCRIPT.read_text()),
    )
    result = session.remote.run(script)
    if not result.ok:
        _set_aside(session, release, result.tail(40))
        what = {commands.BUILD_FAILED: "building its Python environment (pip) failed",
                commands.CHECK_FAILED: "Django's checks or collectstatic failed"}.get(result.code, "building it failed")
        raise DeployError(f"release {release.id}: {what}; {_serving(state)}. Kept in "
                          f"{layout.failed}/ for inspection.\n{result.tail(40)}")
    report = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("{")))
    release.migrations = report["migrations"]
    reused = "reused" if "reusing the Python environment" in result.stdout else "built"
    session.reporter.step("changed", "release", f"{release.id} unpacked ({len(src.archive) // 1024} KiB), "
                          f"Python environment {reused}" + (f", {len(leftovers)} unfinished release(s) from an "
                                                             f"interrupted deploy removed" if leftovers else ""))
    warnings = report["warnings"]
    session.reporter.step("ok", "checks", "manage.py check --deploy passed" +
                          (f" with {len(warnings)} warning(s): {'; '.join(warnings)}" if warnings else "") +
                          "; static files collected")


def _managed_environment(session: Session) -> dict[str, str]:
    """The variables gangway keeps in shared/env; the operator's own lines are left alone."""
    inv = session.inventory
    return {
        "DJANGO_ALLOWED_HOSTS": ",".join(inv.app.domains or (session.host.address,)),
        "DJANGO_DB_NAME": inv.app.name,
        "DJANGO_MEDIA_ROOT": session.layout.media,
        "DJANGO_HTTPS": "1" if inv.tls else "0",
    }


def _undo_migrations(session: Session, release: Release, applied_before: list[str]) -> str:
    """Reverse what this deploy applied, with the new release's code (it holds the reverse operations)."""
    try:
        after = session.applied_migrations()
        extra = releases.migrations_to_reverse(after, applied_before)
        if not extra:
            return ""
        session.migrate(release.id, f"{release.id}-before-reverse",
                        releases.reverse_targets(extra, applied_before, after))
        return f"; the {len(extra)} migration(s) it applied were reversed"
    except DeployError as error:
        return f"; reversing its migrations failed too (the backups are in {session.layout.backups}/):\n{error}"


def _set_aside(session: Session, release: Release, error: str) -> None:
    release.status, release.error = FAILED, error[-2000:]
    event = {"time": _now(), "event": "failed", "release": release.id, "by": who(), "error": error[-300:]}
    session.remote.run(shell.script(commands.set_aside(session.layout, release, session.inventory.deploy_user,
                                                       event)))
    session.reporter.step("FAILED", "release", f"{release.id} set aside in {session.layout.failed}/")


def _prune(session: Session, state: ServerState, live: str, previous: str | None) -> None:
    app = session.inventory.app
    old = releases.to_prune(state, app.keep_releases, live, previous)
    kept = [r for r in state.releases if r not in old]
    failed = releases.failed_to_prune(state.failed, app.keep_failed)
    venvs = releases.venvs_to_prune(state, kept)
    if old or failed or venvs:
        session.remote.check(shell.script(commands.cleanup(session.layout, [], old, failed, venvs)), "pruning")
    session.reporter.step("changed" if old or failed else "ok", "cleanup",
                          f"{len(kept)} release(s) kept" + (f", {len(old)} old removed" if old else "")
                          + (f", {len(failed)} old failed removed" if failed else ""))


# --- rollback --------------------------------------------------------------------------------------------------

@task(auto_shortflags=False, help={
    "inventory": "inventory name (inventory/NAME.yaml) or path; default: production",
    "to": "the release to go back to (see `fab releases`); default: the previous good one",
    "migrate-back": "reverse the migrations the target release does not have (after a backup)",
})
def rollback(c, inventory=None, to=None, migrate_back=False):
    """Go back to the previous good release (or --to RELEASE), migration-aware, with no failed request."""
    _on_each_host(c, inventory, "rollback", lambda session: rollback_on(session, to, migrate_back))


def rollback_on(session: Session, to: str | None, migrate_back: bool) -> str:
    reporter = session.reporter
    with DeployLock(session.remote, session.layout, f"rollback{' to ' + to if to else ''}"):
        state = session.state()
        current = state.live
        target = _rollback_target(state, to)
        reporter.line(f"rollback {session.host.address}: {current} -> {target}")
        release = state.releases[target]
        if release.requirements not in state.venvs:
            raise DeployError(f"release {target}'s Python environment is gone; deploy its commit again "
                              f"({release.commit[:7]}) instead")
        extra = releases.migrations_to_reverse(state.applied, release.migrations)
        if extra and not migrate_back:
            raise DeployError(
                f"the database has {len(extra)} migration(s) that release {target} does not know: "
                f"{', '.join(extra)}. Its code would run against a schema it was not written for. To reverse "
                f"them first (a backup is taken; data in the columns and tables they added is lost), run: "
                f"fab rollback --to {target} --migrate-back")
        if extra:
            dump = session.migrate(current, f"{current}-before-rollback",
                                   releases.reverse_targets(extra, release.migrations, state.applied))
            reporter.step("changed", "migrations", f"{len(extra)} reversed ({', '.join(extra)}) after a "
                          f"backup: {dump}")
        event = {"time": _now(), "event": "rollback", "release": target, "from": current, "by": who()}
        session.go_live(release, current, event)
    reporter.line(f"rolled back to {target}: {session.stats.summary()}")
    return target


def _rollback_target(state: ServerState, to: str | None) -> str:
    if state.live is None:
        raise DeployError("no release is live yet: nothing to roll back from")
    if to:
        if to == state.live:
            raise DeployError(f"{to} is already live")
        release = state.releases.get(to)
        if release is None or release.status != GOOD:
            where = " (it failed and is kept in failed/)" if to in state.failed else ""
            raise DeployError(f"no good release {to!r}{where}; good releases: {', '.join(state.good_ids())}")
        return to
    target = state.previous_good()
    if target is None:
        raise DeployError("there is no previous good release to go back to (see `fab releases`)")
    return target


# --- releases, unlock ----------------------------------------------------------------------------------------

def release_table(state: ServerState) -> list[str]:
    previous, rolled_back = state.previous_good(), state.rolled_back()
    rows = []
    for rid in sorted(state.releases):
        rel = state.releases[rid]
        mark = ("current" if rid == state.live else "previous" if rid == previous else
                "rolled-back" if rid in rolled_back else rel.status)
        rows.append(f"{rid:<34} {rel.commit[:7]:<8} {rel.created:<21} {mark:<11} {rel.deployed_by}")
    for rid in state.failed:
        rows.append(f"{rid:<34} {'':<8} {'':<21} {'failed':<11} (in failed/)")
    return rows


@task(name="releases", auto_shortflags=False, help={"inventory": "inventory name (inventory/NAME.yaml) or path"})
def list_releases(c, inventory=None):
    """List the releases on the server: id, commit, when, and which is current, previous, failed."""
    def show(session: Session) -> None:
        state = session.state()
        session.reporter.line(f"{session.host.address}: {session.app}")
        session.reporter.line(f"{'RELEASE':<34} {'COMMIT':<8} {'CREATED':<21} {'STATUS':<11} BY")
        for row in release_table(state):
            session.reporter.line(row)
        if state.backups:
            session.reporter.line(f"database backups in {session.layout.backups}/ (restore one with pg_restore):")
            for line in state.backups:
                name, size, *when = line.split()
                session.reporter.line(f"  {name:<60} {int(size) / 1024:>9.1f} KiB  {' '.join(when)[:19]}")

    _on_each_host(c, inventory, "releases", show)


@task(auto_shortflags=False, help={
    "inventory": "inventory name (inventory/NAME.yaml) or path",
    "force": "end the holder even though its SSH connection is still alive (a run in progress, which then "
             "fails); only when you are sure it is stuck",
})
def unlock(c, inventory=None, force=False):
    """Clear the deploy lock of a run that is stuck; refuses while that run is still connected, unless --force."""
    from tasks.lock import clear_lock

    def clear(session: Session) -> None:
        session.reporter.line(f"{session.host.address}: {clear_lock(session.remote, session.layout, force)}")

    _on_each_host(c, inventory, "unlock", clear)
