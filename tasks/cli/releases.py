"""`fab releases` and `fab unlock`: the releases on the server as it reports them, and the way out of a deploy
lock whose run is stuck."""

from __future__ import annotations


from .. import timestamps
from ..facts.releases import ServerState
from ..commands.database import unanswered
from ..session.run import Session
from .deploy import running_processes, schema_warning


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




def releases_on(session: Session) -> None:
    """`fab releases` on one server: its releases, the processes running, and what needs attention."""
    state = session.state()
    session.reporter.line(f"{session.host.address}: {session.app}")
    session.reporter.line(f"{'RELEASE':<34} {'COMMIT':<8} {'CREATED':<21} {'STATUS':<11} BY")
    for row in release_table(state):
        session.reporter.line(row)
    if session.inventory.app.processes:
        session.reporter.line(f"processes running (app.processes, read from systemd): "
                              f"{running_processes(session, state.process_units)}")
    if state.live and state.live not in state.running:
        session.reporter.line(f"  WARNING   the live release {state.live} is not running: nginx answers 502. "
                              f"Start it with `fab rollback --to {state.live}`")
    if state.applied is None:
        session.reporter.line("  WARNING   could not read which migrations the database has applied: "
                              + unanswered(session.inventory))
    schema_warning(session, state)
    if state.backups is None:
        session.reporter.line(f"  WARNING   could not list the database backups in {session.layout.backups}/: "
                              f"look with `sudo ls -l {session.layout.backups}/` on the server")
    elif state.backups:
        session.reporter.line(f"database backups in {session.layout.backups}/ (restore one with pg_restore):")
        for file in state.backups:
            session.reporter.line(f"  {file.name:<60} {file.size / 1024:>9.1f} KiB  {timestamps.age(file.age)} old")


def unlock_on(session: Session, force: bool = False) -> None:
    """Clear the deploy lock on one server; after ending a run that was still connected, say what that run did
    as the server shows it once its running step ended (which release is live, whether it switched)."""
    from ..session.lock import clear_lock
    said = clear_lock(session.remote, session.layout, force, reporter=session.reporter)
    session.reporter.line(f"{session.host.address}: {said}")


