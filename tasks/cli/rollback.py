"""`fab rollback`: back to the previous good release (or --to one), migration-aware, through the same switch as a
deploy (deploy.go_live): the target starts (or is already warm), answers healthy, and only then gets the traffic.
Migrations the target does not know are refused, or reversed first with --migrate-back after a backup, with the
code of a release that has their files."""

from __future__ import annotations


from .. import timestamps
from ..facts import releases
from ..facts.releases import GOOD, ServerState
from ..commands.database import unanswered
from ..session.lock import who
from ..session.run import DeployError, Session
from .deploy import code_with, go_live, maintenance_note, reverse, serving_words




def rollback_on(session: Session, to: str | None, migrate_back: bool) -> str:
    reporter = session.reporter
    state = session.state()
    current = state.live
    target = _rollback_target(state, to, migrate_back)
    reporter.line(f"rollback {session.host.address}: {current} -> {target}" + (
        "" if target != current else " (it is live: reversing the migrations it does not know)"
        if current in state.running else " (it is live but not running: starting it)"))
    maintenance_note(session, state)
    release = state.releases[target]
    if release.requirements not in state.venvs:
        raise DeployError(f"release {target}'s Python environment is gone; deploy its commit again "
                          f"({release.commit[:7]}) instead")
    if state.applied is None:
        raise DeployError(f"could not read which migrations the database has applied: "
                          f"{unanswered(session.inventory)} Nothing was changed")
    reverse_for_rollback(session, state, target, migrate_back)
    if target == current and current in state.running:
        reporter.line(f"{target} stays live: the database schema has no migration its code does not know now")
        return target
    event = {"time": timestamps.now(), "event": "rollback", "release": target, "from": current, "by": who()}
    try:
        go_live(session, release, state, event)
    except DeployError as error:
        left = (f"{target} did not start; it is still the live release, and it is not running" if target == current
                else f"{target} did not go live; {current} is still serving" if current in state.running
                else f"{target} did not go live; {current} is still the live release (it was not running)")
        raise DeployError(f"{left}.\n{error}") from None
    reporter.line(f"rolled back to {target}: {session.stats.summary()}")
    return target


def reverse_for_rollback(session: Session, state: ServerState, target: str, migrate_back: bool) -> None:
    """Refuse migrations release `target` does not know, or reverse them first with --migrate-back (after a
    backup, with the code of a release that has their files): once, for every host of the database."""
    reporter, current = session.reporter, state.live
    extra = releases.migrations_to_reverse(state.applied, state.releases[target])
    if extra and not migrate_back:
        raise DeployError(
            f"the database has {len(extra)} migration(s) that release {target} does not know: "
            f"{', '.join(extra)}. Its code would run against a schema it was not written for. To reverse "
            f"them first (a backup is taken; data in the columns and tables they added is lost), run: "
            f"fab rollback --to {target} --migrate-back")
    if extra:
        code, code_dir = code_with(session, state, extra)
        if code.id != current:
            reporter.line(f"  note      the live release {current} does not have the files of these migrations, "
                          f"so it cannot reverse them: reversing with release {code.id}'s code ({code_dir})")
        try:
            dump, gone = reverse(session, code, code_dir, extra, f"{current}-before-rollback")
        except DeployError as error:
            raise DeployError(f"{error}\nNothing was switched: {serving_words(state)}") from None
        reporter.step("changed", "migrations", f"{len(gone)} reversed ({', '.join(gone)}), read back from the "
                      f"database, after a backup: {dump}")
    elif migrate_back:
        reporter.step("ok", "migrations", f"nothing to reverse: the database has no migration {target} does not know")


def _rollback_target(state: ServerState, to: str | None, migrate_back: bool = False) -> str:
    if state.live is None:
        raise DeployError("no release is live yet: nothing to roll back from")
    if to:
        if to == state.live and to in state.running and not (migrate_back and state.schema_ahead()):
            raise DeployError(f"{to} is already live and running" + (
                f"; the database has {len(state.schema_ahead())} migration(s) it does not know: --migrate-back "
                "reverses them" if state.schema_ahead() and not migrate_back else ""))
        release = state.releases.get(to)
        if release is None or release.status != GOOD:
            where = " (it failed and is kept in failed/)" if to in state.failed else ""
            raise DeployError(f"no good release {to!r}{where}; good releases: {', '.join(state.good_ids())}")
        return to
    target = state.previous_good()
    if target is None:
        raise DeployError("there is no previous good release to go back to (see `fab releases`)")
    return target
