"""A deploy and a rollback across every app host of a layout of several servers (README, "Several servers").

The order of a rolling deploy, with the deploy lock held on every app host from the first step to the last:
1. read every host's state; refuse drift, a full disk or an unreadable database on any of them, before anything
   is built;
2. check the pending migrations against the live release once (one database), then build the release on every
   host at once;
3. migrate once, from the first app host, after a backup;
4. switch the web hosts in batches (deploy.batch, default 1), each behind the same health gate as one server's
   switch; the worker host goes last, its processes with it.
If a host fails its health check, no further host switches, those already switched go back to the release they
served (it is still running: their standby), the migrations are reversed, and the message names the host and
why. A single server takes the one-server path (deploy.deploy_to, rollback.rollback_on) unchanged.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from .. import timestamps
from ..facts import releases
from ..facts.releases import GOOD, ServerState
from ..project import source
from ..session.lock import who
from ..session.run import DeployError, Session, at_once
from . import hooks
from .deploy import (_build, _check_environment_size, _jobs_warning, _processes_drift, _prune, _set_aside, _uv_drift,
                     _undo_migrations, compatibility, deploy_to, go_live, maintenance_note, migrate, release_for,
                     schema_warning)
from .rollback import _rollback_target, rollback_on, reverse_for_rollback
from ..provisioning import served

T = TypeVar("T")


class HostFailed(DeployError):
    """A step that failed on one host of several: the message names it."""


def on_each(sessions: list[Session], work: Callable[[Session], T]) -> list[T]:
    """`work` on every session at once, each host's lines printed together; the first failure (in the
    inventory's order) is raised once all have ended, naming its host."""
    results = at_once(sessions, work)
    for session, result in zip(sessions, results):
        if isinstance(result, DeployError):
            raise HostFailed(f"on {session.host.address}: {result}") from None
    return results


def deploy_all(sessions: list[Session], src: source.Source, allow_unsafe: bool = False) -> str:
    """The deploy of `src` to every app host: one server's deploy, or a rolling one."""
    if len(sessions) == 1:
        return deploy_to(sessions[0], src, allow_unsafe)
    first = sessions[0]
    reporter, inv = first.reporter, first.inventory
    states = on_each(sessions, _readable_state)
    state_of = {s.host.address: state for s, state in zip(sessions, states)}
    for session, state in zip(sessions, states):
        _refusals(session, state)
    release_id = _common_id(src, states)
    built = {s.host.address: release_for(src, state, inv.app.server, release_id) for s, state in zip(sessions, states)}
    lives = {s.host.address: state.live for s, state in zip(sessions, states)}
    webs = sorted(sessions, key=lambda s: s.host.has("worker"))  # the worker host switches last
    reporter.line(f"deploy {release_id} ({src.ref} = {src.commit[:7]}) to {len(sessions)} app hosts "
                  f"({', '.join(s.host.address for s in sessions)}), {inv.deploy_batch} at a time ({inv.source})")
    schema_warning(first, states[0])
    maintenance_note(first, states[0])
    for session, state in zip(sessions, states):
        _jobs_warning(session, state)
    compatibility(first, states[0], src, allow_unsafe)
    results = at_once(sessions, lambda s: _build(s, state_of[s.host.address], src, built[s.host.address]))
    failed = [(s, r) for s, r in zip(sessions, results) if isinstance(r, DeployError)]
    if failed:
        for session, result in zip(sessions, results):
            if not isinstance(result, DeployError):
                _set_aside(session, built[session.host.address], "the build failed on another host")
        raise DeployError(f"release {release_id} went live nowhere; {_serving(lives)}. It failed to build on "
                          + "; ".join(f"{s.host.address}: {error}" for s, error in failed))
    release = built[first.host.address]
    applied_before = states[0].applied
    pending = releases.migrations_missing(applied_before, release)
    switched: list[Session] = []
    migrated = False
    try:
        if pending:
            dump = migrate(first, release_id, f"{release_id}-before-migrate")
            migrated = True
            reporter.step("changed", "migrations", f"{len(pending)} applied once, from {first.host.address} "
                          f"({', '.join(pending[:4])}{', ...' if len(pending) > 4 else ''}) after a backup: {dump}")
        else:
            reporter.step("ok", "migrations", "nothing to apply")
        hooks.run(first, release_id, "after_migrate")
        for release_ in built.values():
            release_.status = GOOD
        event = {"time": timestamps.now(), "event": "live", "release": release_id, "by": who(),
                 "commit": src.commit}
        for start in range(0, len(webs), inv.deploy_batch):
            batch = webs[start:start + inv.deploy_batch]
            results = at_once(batch, lambda s: go_live(s, built[s.host.address], state_of[s.host.address],
                                                       {**event, "previous": lives[s.host.address]}))
            switched += [s for s, r in zip(batch, results) if not isinstance(r, DeployError)]
            for session, result in zip(batch, results):
                if isinstance(result, DeployError):
                    raise HostFailed(f"{session.host.address} failed its switch, so no further host switched:\n"
                                     f"{result}")
    except DeployError as error:
        why = str(error)
        back = _switch_back(switched, lives)
        undone = _undo_migrations(first, release, states[0], applied_before, pending) if migrated else ""
        now = _read_lives(sessions)
        # Set aside wherever it is not live (a host that could not switch back keeps serving it).
        at_once([s for s in sessions if now[s.host.address] != release_id],
                lambda s: _set_aside(s, built[s.host.address], why))
        raise DeployError(f"release {release_id} did not go live: {back}{undone}. Read back now: "
                          f"{_serving(now)}.\n{why}") from None
    at_once(sessions, lambda s: _prune(s, state_of[s.host.address].after_deploy(built[s.host.address]),
                                       release_id, lives[s.host.address]))
    try:
        hooks.run(first, release_id, "after_switch")
    except hooks.HookFailed as error:
        raise DeployError(f"{release_id} is live on every app host, but {error}") from None
    reporter.line(f"deployed {release_id} to {len(sessions)} hosts: {_serving(_read_lives(sessions))}")
    return release_id


def _readable_state(session: Session) -> ServerState:
    state = session.state()
    if state.applied is None:
        raise DeployError("could not read which migrations the database has applied: does the database answer "
                          "this host? (`fab status` says). Nothing was changed")
    return state


def _refusals(session: Session, state: ServerState) -> None:
    """What refuses a deploy on one server refuses it on all: nothing is built anywhere."""
    try:
        if differ := served.drift(session.inventory, state.served_files, session.host):
            raise DeployError(f"{served.refusal(session.inventory, differ)}. Nothing was built or uploaded")
        _processes_drift(session, state)
        _uv_drift(state)
        _check_environment_size(session, state)
    except DeployError as error:
        raise HostFailed(f"on {session.host.address}: {error}") from None


def _common_id(src: source.Source, states: list[ServerState]) -> str:
    """One release id for every host, new on each of them."""
    while True:
        release_id = releases.new_release_id(src.commit, src.dirty)
        if not any(release_id in s.releases or release_id in s.failed for s in states):
            return release_id
        time.sleep(0.2)  # two deploys of one commit in the same second


def _switch_back(switched: list[Session], lives: dict[str, str | None]) -> str:
    """The hosts already switched, back on the release each served (still running: its standby)."""
    if not switched:
        return "no host had switched to it"
    said = []
    for session in switched:
        old = lives[session.host.address]
        if old is None:
            said.append(f"{session.host.address} had nothing live before it")
            continue
        try:
            state = session.state()
            event = {"time": timestamps.now(), "event": "rollback", "release": old, "by": who(),
                     "from": state.live, "why": "another host failed its switch"}
            go_live(session, state.releases[old], state, event)
            said.append(f"{session.host.address} switched back to {old}")
        except DeployError as error:
            said.append(f"{session.host.address} could NOT switch back to {old}: {error}")
    return "; ".join(said)


def _read_lives(sessions: list[Session]) -> dict[str, str | None]:
    """Which release each host serves now, read back (a host that could not be read says so)."""
    lives = {}
    for session in sessions:
        try:
            lives[session.host.address] = session.state().live
        except DeployError as error:
            lives[session.host.address] = f"unknown ({error})"
    return lives


def _serving(lives: dict[str, str | None]) -> str:
    if len(set(lives.values())) == 1:
        live = next(iter(lives.values()))
        return f"every app host serves {live}" if live else "no release is live on any app host"
    return ", ".join(f"{host} serves {live or 'nothing'}" for host, live in lives.items())


def rollback_all(sessions: list[Session], to: str | None, migrate_back: bool) -> str:
    """Every app host back to the same release: the previous good one of the first host, or --to one."""
    if len(sessions) == 1:
        return rollback_on(sessions[0], to, migrate_back)
    first = sessions[0]
    reporter = first.reporter
    states = on_each(sessions, _readable_state)
    state_of = {s.host.address: state for s, state in zip(sessions, states)}
    target = _rollback_target(states[0], to, migrate_back)
    for session, state in zip(sessions, states):
        release = state.releases.get(target)
        if release is None or release.status != GOOD or release.requirements not in state.venvs:
            raise DeployError(f"{session.host.address} has no good release {target} with its Python environment; "
                              f"nothing was changed. Deploy its commit again instead")
    lives = {s.host.address: state.live for s, state in zip(sessions, states)}
    reporter.line(f"rollback of {len(sessions)} app hosts to {target} (now: {_serving(lives)})")
    reverse_for_rollback(first, states[0], target, migrate_back)
    event = {"time": timestamps.now(), "event": "rollback", "release": target, "by": who()}
    results = at_once(sessions, lambda s: go_live(s, state_of[s.host.address].releases[target],
                                                  state_of[s.host.address], {**event, "from": lives[s.host.address]})
                      if lives[s.host.address] != target or target not in state_of[s.host.address].running else None)
    now = _serving(_read_lives(sessions))
    failed = [f"{s.host.address}: {r}" for s, r in zip(sessions, results) if isinstance(r, DeployError)]
    if failed:
        raise DeployError(f"the rollback to {target} failed on " + "; ".join(failed) + f"\nRead back now: {now}")
    reporter.line(f"rolled back to {target}: {now}")
    return target

