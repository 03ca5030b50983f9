"""The release hooks of the inventory (app.hooks), as steps of a deploy's scripts (nothing here runs).

Each hook runs in its own transient systemd unit (`Layout.hook_unit`), sandboxed like every management command of
a release (`release.sandbox_argv`), in the release's directory, with the app's environment, bounded by
RuntimeMaxSec= (systemd stops it at its timeout, even with nobody waiting for it). templates/programs/run_hook.py
starts it, collects its output and reads back from systemd how it ended, as one report line.

Who runs it: `after_build` hooks write into the release (compilemessages writes .mo files beside the .po ones),
which only the build user may do until the release is sealed (after Django's checks), so they run as the build
user, with the release writable. `after_migrate` and `after_switch` hooks run as the app user, with the media
directory writable, as `fab manage` runs a command: the release is sealed by then.
"""

from __future__ import annotations

from ..inventory import Hook
from ..layout import Layout
from . import programs
from .release import release_environment, sandbox_argv
from .shell import join

# How many of a hook's last output lines come back to the deploy's output.
OUTPUT_LINES = 60
# How long systemd gives a hook that timed out (or was stopped) to end after SIGTERM before it is killed.
STOP_GRACE_S = 10


def argv(release_dir: str, hook: Hook) -> list[str]:
    """The program and arguments a hook runs: `manage.py ...` with the release's Python, a bare name from the
    release's virtualenv, an absolute path as it is. systemd expands $VARIABLES in a command line (`$$` is one
    `$`): every `$` is doubled, so each word reaches the program exactly as the inventory wrote it."""
    first, *rest = hook.command
    if first == "manage.py":
        words = [f"{release_dir}/.venv/bin/python", "manage.py", *rest]
    elif "/" not in first:
        words = [f"{release_dir}/.venv/bin/{first}", *rest]
    else:
        words = [first, *rest]
    return [word.replace("$", "$$") for word in words]


def step_name(point: str, index: int) -> str:
    """The name of a hook's step in its script, which is also its report's key."""
    return f"hook {point} {index}"


def run(layout: Layout, release_id: str, point: str, index: int, hook: Hook, user: str, writable: list[str],
        release_dir: str | None = None) -> str:
    """The `index`th hook (from 1) at `point`, in the release, as `user`: exits non-zero when it fails or times
    out, and reports {step_name: {status, seconds, output, lines, result, exit_status}} (run_hook.py)."""
    release_dir = release_dir or layout.release(release_id)
    unit = layout.hook_unit(release_id, point, index)
    command = sandbox_argv(layout, unit, user, release_dir, argv(release_dir, hook), writable,
                           release_environment(layout, release_id, release_dir),
                           properties=(f"RuntimeMaxSec={hook.timeout}", f"TimeoutStopSec={STOP_GRACE_S}"),
                           collect=False)
    return programs.python("run_hook.py", {"argv": command, "unit": unit, "key": step_name(point, index),
                                           "lines": OUTPUT_LINES})


def steps(layout: Layout, release_id: str, point: str, hooks: tuple[Hook, ...],
          release_dir: str | None = None) -> list[tuple[str, str]]:
    """The named steps that run `hooks` at `point`, in order: at `after_build` as the build user (the release
    is still theirs to write), later as the app user."""
    release_dir = release_dir or layout.release(release_id)
    if point == "after_build":
        user, writable = layout.build_user, [release_dir]
    else:
        user, writable = layout.app, [layout.media]
    return [(step_name(point, i), run(layout, release_id, point, i, hook, user, writable, release_dir))
            for i, hook in enumerate(hooks, 1)]


def stop(layout: Layout, release_id: str) -> str:
    """Stop every hook unit of a release's deploy (one still running when the deploy was interrupted); never
    fails."""
    pattern = f"{layout.hook_unit_prefix}{release_id}-*"
    return (f"{join('systemctl', 'stop', pattern)} 2>/dev/null || true\n"
            f"{join('systemctl', 'reset-failed', pattern)} 2>/dev/null || true")
