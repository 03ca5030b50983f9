"""`fab backup`, `fab backups`, `fab restore`, `fab maintenance`: database backups you can restore, and a page
that tells visitors the site is being worked on.

Backups are root's files in backups/ on the server (tasks/commands/backup.py builds the shell). A restore takes a
fresh backup first, puts the site in maintenance mode, restores in one transaction (all or nothing), checks the
restored schema against the live release's migrations, and ends maintenance mode.

With several servers and a db host, backups are where the database is: `fab backup` dumps on the db host (as
postgres, locally), next to its daily dumps. The dump a deploy takes before migrating is taken by the deploy's
own session on its app host, through the app's client (the same TLS connection the app uses, as with
database.url), into that host's backups/: the deploy runs there, and a dump that must exist before the migrate
starts is best taken in the same session, with no second login. `fab backups` lists the db host's and the app
hosts'; `fab restore NAME` restores from the first of them that holds NAME: on the db host as postgres with the
app's role, from an app host through the client. On a db host that runs no app there is no maintenance page
and no release to compare the schema with: the restore says so and what to run instead.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from invoke.exceptions import Exit

from ..commands import backup as commands, release as release_commands
from ..facts import backups as listing, releases
from .. import timestamps
from ..commands.database import db_address
from ..inventory import Host, Inventory
from ..session.lock import who
from ..session.uploads import send_file
from ..facts.releases import ServerState
from ..connection.remote import ConnectionLost, RemoteError
from ..session.run import DeployError, Session, Task, last_lines

# --- fab backup / fab backups ---------------------------------------------------------------------------------


def _db_host(inventory: Inventory) -> Host | None:
    """The db host of several servers, where backups are taken; None for a single server and database.url."""
    return inventory.db_host if db_address(inventory) is not None else None


def on_db_host(inventory: Inventory, hosts: list[Host]) -> list[Host]:
    """The hosts `fab backup` acts on: of several servers, the one that takes the backups (the db host, or with
    database.url one app host: Inventory.backup_host), when selected; else every one."""
    keeper = inventory.backup_host if inventory.several_servers else None
    return [h for h in hosts if h.address == keeper.address] if keeper else hosts


def holding_dumps(inventory: Inventory, hosts: list[Host]) -> list[Host]:
    """The hosts that may hold dumps, the db host first: with several servers, the db host (backups) and the
    app hosts (the dumps their deploys took before migrating); else every one."""
    db = _db_host(inventory)
    if db is None:
        return hosts
    wanted = [db.address] + [h.address for h in inventory.app_hosts if h.address != db.address]
    return sorted((h for h in hosts if h.address in wanted), key=lambda h: wanted.index(h.address))


def _app_runs_on(session: Session) -> bool:
    return session.host.has("web") or session.host.has("worker")


def _local_target(directory: str | None, name: str) -> Path:
    folder = Path(directory or ".").expanduser()
    if not folder.is_dir():
        raise DeployError(f"--to {directory}: no such local directory; create it or name another")
    return folder / name


def fetch_backup(session: Session, name: str, directory: str | None) -> Path:
    """backups/NAME to the local DIRECTORY (default: here), owner-only on both sides, complete or not at all."""
    target = _local_target(directory, name)
    copy = session.layout.upload(secrets.token_hex(6), name)
    user = session.remote.user
    ok, _, tail = session.run(("exists", commands.exists(session.layout, name)),
                              ("copy", commands.readable_copy(session.layout, name, user, copy)))
    if not ok:
        raise DeployError(last_lines(tail))
    part = target.with_name(target.name + ".part")
    try:
        # Created owner-only before a byte arrives: SFTP writes into it and keeps its mode.
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        session.remote.get(copy, str(part))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
        session.remote.run(release_commands.remove_file(copy))
    session.reporter.step("ok", "download", f"{target} ({listing.size_words(target.stat().st_size)}, only you can read it)")
    return target


def backup_on(session: Session, media: bool, download_to: str | None) -> str:
    """A dump of the database now (and an archive of the media files): TIMESTAMP-manual.dump in backups/."""
    layout, name = session.layout, f"{commands.stamp()}-manual"
    session.reporter.line(f"backup {session.app} on {session.host.address}")
    steps = [("backup", release_commands.backup(layout, session.database, name))]
    if media:
        steps.append(("media", commands.media_archive(layout, name)))
    ok, report, tail = session.run(*steps, progress=listing.dump_progress)
    if not ok:
        where = "the media archive" if report.get("failed") == "media" else "the database dump"
        raise DeployError(f"{where} failed on {session.host.address}; no partial file was kept:\n{last_lines(tail)}")
    files = [report["backup"]] + ([report["media"]] if media else [])
    files_now = session.remote.gather([listing.listing_probe(layout)])["backup_files"]
    by_name = {file.name: file.size for file in files_now or []}
    for path in files:
        file = path.rsplit("/", 1)[1]
        size = listing.size_words(by_name[file]) if file in by_name else "its size could not be read"
        session.reporter.step("changed", "backup", f"{path} ({size}, root's alone)")
    if not media:
        session.reporter.line("  (media files are not in the dump: `fab backup --media` packs shared/media too)")
    if download_to is not None:
        for path in files:
            fetch_backup(session, path.rsplit("/", 1)[1], download_to)
    return files[0]




def table(files: list[listing.BackupFile]) -> list[str]:
    rows = [f"  {'NAME':<48} {'SIZE':>10}  {'AGE':>7}  KIND"]
    for name, size, seconds in files:
        rows.append(f"  {name:<48} {listing.size_words(size):>10}  {timestamps.age(seconds):>8}  {commands.kind_of(name)}")
    return rows




# --- fab restore ------------------------------------------------------------------------------------------------


def backups_on(session: Session, job: Task, name: str | None, to: str | None) -> bool | None:
    """`fab backups` on one server: list its backups, or with NAME download it from the first that holds it."""
    if name:
        several = _db_host(session.inventory) is not None
        if several and not first_holding(session, job, name):
            return False
        fetch_backup(session, name, to)
        return True
    files = session.remote.gather([listing.listing_probe(session.layout)])["backup_files"]
    if files is None:
        raise DeployError(f"could not list {session.layout.backups}/ on {session.host.address}, so which "
                          f"backups it holds is unknown: look with `sudo ls -l {session.layout.backups}/` there")
    session.reporter.line(f"{session.host.address}: {len(files)} backup file(s) in {session.layout.backups}/")
    if files:
        for row in table(files):
            session.reporter.line(row)
    session.reporter.line("  restore one with `fab restore NAME`; take one now with `fab backup`")
    return None


def schema_difference(applied: list[str] | None, known: list[str], replaces: dict | None = None) -> str:
    """What to say about the restored database's migrations against the live code's (its migrations and the
    names its squashed ones replace, compared as `showmigrations` does): "" when they agree."""
    if applied is None:
        return ("could not read which migrations the restored database has applied: check the site, and "
                "`fab manage -- showmigrations`")
    live = releases.Release("live", migrations=list(known), replaces=dict(replaces or {}))
    ahead = releases.migrations_to_reverse(applied, live)
    behind = releases.migrations_missing(applied, live)
    text = []
    if ahead:
        text.append(f"the restored database has {len(ahead)} migration(s) the live code does not know "
                    f"({', '.join(ahead[:5])}{', ...' if len(ahead) > 5 else ''}): the backup is from newer code. "
                    "Deploy the code that has them (fab deploy --ref ...), or restore an older backup")
    if behind:
        text.append(f"the restored database lacks {len(behind)} migration(s) the live code has "
                    f"({', '.join(behind[:5])}{', ...' if len(behind) > 5 else ''}): the backup is from older code. "
                    "Apply them with `fab manage -- migrate`")
    return "; ".join(text)


RESTORE_INTERRUPTED = ("nothing was restored and maintenance mode was not touched (Ctrl-C came before the "
                       "restore began)")


class _Progress:
    """How far a restore got, for what Ctrl-C says: the uploaded dump kept, the backup taken before (or being
    taken: pg_dump goes on on the server after Ctrl-C), whether this restore turned maintenance mode on (or was
    turning it on), whether pg_restore was started."""
    def __init__(self) -> None:
        self.uploaded: str | None = None
        self.taking: str | None = None
        self.fresh: str | None = None
        self.maintenance = False
        self.restoring = False
        self.restored = False


def first_holding(session: Session, task: Task, name: str) -> bool:
    """Whether this host is the one to act on NAME: the first of the task's hosts that holds it (a host after
    that one is passed over)."""
    if any(result.value for result in task.results):
        return False
    listed = session.remote.gather([listing.listing_probe(session.layout)])["backup_files"] or []
    if any(file.name == name for file in listed):
        return True
    session.reporter.line(f"{session.host.address}: no {name} in {session.layout.backups}/")
    return False


def found_somewhere(results: list, task: str, name: str) -> None:
    """After a task that acts on the first host holding NAME: fails, naming where it looked, when none did."""
    if not any(result.value for result in results):
        raise Exit(f"{task} failed: there is no backup {name} on {', '.join(r.host for r in results)}: see the "
                   "names `fab backups` lists; nothing was changed", code=1)


def restore_on(session: Session, name: str | None, upload: tuple[str, bytes] | None,
               task: Task | None = None) -> bool:
    """Restore NAME (or the upload) here; with several servers, only on the first host that holds NAME.
    Whether it ran here."""
    if name and task is not None and _db_host(session.inventory) and not first_holding(session, task, name):
        return False
    progress = _Progress()
    try:
        _restore_steps(session, name, upload, progress)
    except KeyboardInterrupt:
        if task is not None:
            task.interrupted = _interrupted(session, progress, name)
        raise
    return True


def _restore_steps(session: Session, name: str | None, upload: tuple[str, bytes] | None,
                   progress: _Progress) -> None:
    reporter, layout = session.reporter, session.layout
    reporter.line(f"restore {name or upload[0]} into {session.app} on {session.host.address}")
    state = session.state() if _app_runs_on(session) else None
    if upload:
        remote = send_file(session, upload[1], Path(upload[0]).name, "nothing was restored")
        adopt = commands.adopt_upload(layout, session.database, remote, f"{commands.stamp()}-uploaded")
        ok, report, tail = session.run(("adopt", adopt))
        if not ok:
            raise DeployError(f"nothing was restored: {last_lines(tail)}")
        name = progress.uploaded = report["backup"].rsplit("/", 1)[1]
        reporter.step("changed", "upload", f"{upload[0]} -> {report['backup']} (root's alone)")
    else:
        ok, _, tail = session.run(("exists", commands.exists(layout, name)))
        if not ok:
            raise DeployError(f"{last_lines(tail)}: see the names `fab backups` lists; nothing was changed")
    before = f"{commands.stamp()}-before-restore"
    progress.taking = before + listing.DUMP
    ok, report, tail = session.run(("backup", release_commands.backup(layout, session.database, before)),
                                   progress=listing.dump_progress)
    progress.taking = None
    if not ok:
        raise DeployError(f"the backup before the restore failed, so nothing was restored:\n{last_lines(tail)}")
    fresh = progress.fresh = report["backup"]
    reporter.step("changed", "backup", f"{fresh}: the database as it was, should you want it back")
    _restore(session, state, name, fresh, progress)


def _interrupted(session: Session, progress: _Progress, name: str | None) -> str:
    """What is true after Ctrl-C during a restore, with the maintenance flag read back from the server."""
    kept = (f" The uploaded dump is kept as {progress.uploaded}." if progress.uploaded else "") + (
        f" The backup taken just before is {progress.fresh}." if progress.fresh else "") + (
        f" The backup it was taking first ({progress.taking}) may still finish on the server: `fab backups` "
        "lists it once it is complete." if progress.taking else "")
    name = progress.uploaded or name
    if progress.restoring:
        flag = _read_flag(session)
        return (f"the restore of {name} may be half-way: pg_restore runs on the server in one transaction, so the "
                "database ends with either all of the backup or none of it, and it may still be running. "
                + ("Maintenance mode stays on (read back from the server: on), so visitors get the maintenance "
                   "page while it ends. " if flag else
                   "Maintenance mode is OFF (read back from the server): visitors may see the data change. "
                   if flag is False else "Maintenance mode was left on; it could not be read back. ")
                + f"Check the data (fab manage -- showmigrations), then `fab maintenance off`, or run `fab restore "
                  f"{name}` again.{kept}")
    if progress.restored:
        off = _off_words(*_maintenance_off(session)) if progress.maintenance else \
            "maintenance mode was on before the restore and stays on"
        return f"{name} was restored (the schema check after it was cut short); {off}.{kept}"
    if progress.maintenance:
        return f"nothing was restored (pg_restore had not started); {_off_words(*_maintenance_off(session))}.{kept}"
    flag = _read_flag(session)
    return ("nothing was restored and this restore did not turn maintenance mode on"
            + (" (read back from the server: on, as it was before)" if flag else
               " (read back from the server: off)" if flag is False else "") + f".{kept}")


def _read_flag(session: Session) -> bool | None:
    """The maintenance flag as the server has it now, or None when it cannot be read."""
    try:
        ok, report, _ = session.run(("readback", commands.maintenance_read(session.layout)))
    except (RemoteError, KeyboardInterrupt):
        return None
    return report.get("maintenance") if ok else None


def _maintenance_off(session: Session) -> tuple[bool, bool | None]:
    """Turn maintenance mode off and read the flag back: (the command succeeded, the flag as read back)."""
    try:
        ok, report, _ = session.run(("maintenance", commands.maintenance_off(session.layout)),
                                    ("readback", commands.maintenance_read(session.layout)))
    except (RemoteError, KeyboardInterrupt):
        return False, None
    return ok, report.get("maintenance")


def _off_words(ok: bool, flag: bool | None) -> str:
    if ok and flag is False:
        return "maintenance mode is off again (read back from the server: off)"
    if flag:
        return "maintenance mode is STILL ON (read back from the server): run `fab maintenance off`"
    return "turning maintenance mode off could not be confirmed: run `fab maintenance off`"


def _restore(session: Session, state: ServerState | None, name: str, fresh: str, progress: _Progress) -> None:
    """`state`: the app's on this host; None on a db host that runs no app (no maintenance page, no release)."""
    reporter, layout = session.reporter, session.layout
    was_on = state is None or state.maintenance
    if state is None:
        reporter.step("ok", "maintenance", f"not switched: {session.host.address} is the db host and serves no "
                      "page (`fab maintenance on` first keeps visitors from seeing the data change)")
    elif was_on:
        reporter.step("ok", "maintenance", "already on; it stays on after the restore")
    else:
        progress.maintenance = True  # from here on, Ctrl-C turns it off again (it may be on already)
        ok, _, tail = session.run(("maintenance", commands.maintenance_on(layout, who(), timestamps.now())))
        if not ok:
            off = _off_words(*_maintenance_off(session))
            raise DeployError(f"could not turn maintenance mode on, so nothing was restored; {off}:\n"
                              f"{last_lines(tail)}")
        reporter.step("changed", "maintenance", "on: visitors get the maintenance page (503) during the restore")
    progress.restoring = True
    try:
        ok, _, tail = session.run(("restore", commands.restore_database(layout, session.database, name)),
                                  progress=listing.restore_progress)
    except ConnectionLost as error:
        raise ConnectionLost(f"{error} The restore of {name} may or may not have finished (it runs in one "
                             "transaction: the database holds either all of it or none). Maintenance mode stays "
                             f"on. The backup taken just before is {fresh}. Check the site, then run `fab restore "
                             f"{name}` again or `fab maintenance off`.") from None
    progress.restoring = False
    if not ok:
        off = "" if was_on else "; " + _off_words(*_maintenance_off(session))
        removed = ""
        if progress.uploaded:  # a dump pg_restore refuses is no backup: it must not take a retention slot
            gone, _, _ = session.run(("remove", commands.remove_backup(layout, progress.uploaded)))
            removed = (f" The uploaded dump {progress.uploaded} was removed from {layout.backups}/ (your local "
                       "file is unchanged)." if gone else "")
        raise DeployError(f"pg_restore of {name} failed; it ran in one transaction, so the database is unchanged"
                          f"{off}. The backup taken just before is {fresh}.{removed}\n{last_lines(tail)}")
    progress.restored = True
    reporter.step("changed", "restore", f"{name} restored into the database {session.app}")
    applied = session.remote.gather([release_commands.applied_probe(session.database)])["applied"]
    live = state.releases.get(state.live or "") if state else None
    if state is None:
        reporter.step("ok", "schema", f"{len(applied or [])} migrations applied (read back); compare them with the "
                      "live release's: `fab manage -- showmigrations`" if applied is not None else
                      "could not read which migrations the restored database has applied: `fab manage -- "
                      "showmigrations`")
    elif live is None:
        reporter.step("ok", "schema", "no release is live: the next deploy migrates what the database lacks")
    elif problem := schema_difference(applied, live.migrations, live.replaces):
        reporter.step("WARNING", "schema", problem)
    else:
        reporter.step("ok", "schema", f"the restored migrations match the live release {live.id}'s "
                      f"({len(live.migrations)})")
    if not was_on:
        ok, flag = _maintenance_off(session)
        if ok and flag is False:
            reporter.step("changed", "maintenance", "off (read back from the server): visitors reach the app again")
        else:
            raise DeployError(f"{name} was restored, but {_off_words(ok, flag)}")


def confirm(inventory: Inventory, what: str) -> None:
    hosts = ", ".join(h.address for h in inventory.hosts)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise DeployError(f"a restore replaces all the data of {inventory.app.name} on {hosts}, and there is no "
                          "terminal to ask on: add --yes to confirm")
    answer = input(f"Restore {what} into the database of {inventory.app.name} on {hosts}? Its current data is "
                   "replaced (a backup of it is taken first). Type the app's name to go on: ")
    if answer.strip() != inventory.app.name:
        raise DeployError("not confirmed; nothing was changed")




# --- fab maintenance --------------------------------------------------------------------------------------------


def maintenance_on(session: Session, mode: str) -> None:
    """`fab maintenance on|off` on one server, where visitors reach the site; the flag read back."""
    inventory, layout = session.inventory, session.layout
    if not inventory.fronts_site(session.host):
        session.reporter.line(f"{session.host.address}: not switched here: visitors reach the site through the "
                              f"load balancer {inventory.lb_host.address}, which holds the maintenance flag"
                              if inventory.lb_host and session.host.has("web") else
                              f"{session.host.address}: not switched here: no site is served from this server")
        return
    step = (commands.maintenance_on(layout, who(), timestamps.now()) if mode == "on"
            else commands.maintenance_off(layout))
    ok, report, tail = session.run(("maintenance", step), ("readback", commands.maintenance_read(layout)))
    flag = report.get("maintenance")
    if not ok or flag is not (mode == "on"):
        seen = {True: "on", False: "off"}.get(flag, "unknown: it could not be read")
        raise DeployError(f"could not turn maintenance mode {mode}; read back from the server it is {seen}"
                          + (f":\n{last_lines(tail)}" if not ok else ""))
    session.reporter.line(
        f"{session.host.address}: maintenance mode is on (read back from the server): every request but ACME "
        "challenges gets the maintenance page (503, Retry-After); deploys and rollbacks still work. End it with "
        "`fab maintenance off`"
        if mode == "on" else f"{session.host.address}: maintenance mode is off (read back from the server): "
                             "visitors reach the app again")
