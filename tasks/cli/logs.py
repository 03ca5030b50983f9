"""`fab logs`: the app's journal (every Gunicorn instance, each release's), or nginx's logs, from the server.

`logs_command` builds the one command (pure, every operator value quoted and checked first); the task runs it
with its output streaming here. `--follow` runs it with a terminal on the server, so Ctrl-C reaches journalctl
(or tail) there and ends it, and fab with it.
"""

from __future__ import annotations

import re


from .. import defaults
from ..layout import Layout
from ..commands.shell import join, q

NGINX_LOGS = ("/var/log/nginx/access.log", "/var/log/nginx/error.log")
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_UNITS = r"(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hour|hours|d|day|days|w|week|weeks|" \
         r"month|months|y|year|years)"
# journalctl's --since forms (systemd.time(7)) that mean one thing: keywords, a date with an optional time,
# a time of today, and relative times ("1 hour ago", "-30min", "2 days ago").
_SINCE = re.compile("|".join([
    r"(today|yesterday|now)",
    r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?( UTC)?",
    r"\d{2}:\d{2}(:\d{2})?",
    rf"-?\d+ ?{_UNITS}( \d+ ?{_UNITS})*( ago)?",
]))


class LogsError(ValueError):
    """An option value refused before anything is sent: the message says what would be accepted."""


def check_since(value: str) -> str:
    if not _SINCE.fullmatch(value):
        raise LogsError(f"--since {value!r}: give a time journalctl understands, e.g. \"1 hour ago\", \"30 min ago\", "
                        "\"today\", \"yesterday\", \"2026-11-27\" or \"2026-11-27 10:00\"")
    return value


def check_level(value: str) -> str:
    if value not in LEVELS and not re.fullmatch(r"[0-7]", value):
        raise LogsError(f"--level {value!r}: give a journal priority, one of {', '.join(LEVELS)} (or 0-7); lines "
                        "at that level and more severe are shown")
    return value


def check_grep(value: str) -> str:
    if not value or any(c in value for c in "\n\r\0"):
        raise LogsError("--grep: give one line of text to look for")
    return value


def check_lines(value) -> int:
    try:
        lines = int(value)
    except (TypeError, ValueError):
        lines = -1
    if lines < 0:
        raise LogsError(f"--lines {value!r}: give a number of lines, e.g. --lines 500 (0: none of the past ones)")
    return lines


def check_process(value: str, names: list[str] | None) -> str:
    """A process type's name: one of the inventory's app.processes (`names`; None: not known yet)."""
    if names is not None and value not in names:
        known = f"the inventory's app.processes has {', '.join(names)}" if names else "the inventory has no app.processes"
        raise LogsError(f"--process {value!r}: {known}")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", value):
        raise LogsError(f"--process {value!r}: give a process type's name from app.processes, e.g. worker")
    return value


def logs_command(layout: Layout, lines: int = defaults.LOG_LINES, follow: bool = False, since: str | None = None,
                 grep: str | None = None, level: str | None = None, nginx: bool = False,
                 process: str | None = None, processes: list[str] | None = None) -> str:
    """The command printing the logs asked for. Values are checked (LogsError) and quoted.

    --grep is a fixed string grep looks for (journalctl's own --grep turns its output newest-first with --lines
    from systemd 253 on, and looked only among the last N lines before): the last N lines that match; when
    following, the last N lines filtered, then every new one that matches."""
    lines = check_lines(lines)
    text = check_grep(grep) if grep is not None else None
    # --line-buffered: a followed line shows at once, not when grep's buffer fills.
    match = f"grep --line-buffered -i -F -e {q(text)}" if text is not None else ""
    if nginx:
        refused = [name for name, value in (("--since", since), ("--level", level), ("--process", process))
                   if value is not None]
        if refused:
            raise LogsError(f"{' and '.join(refused)} apply to the app's journal; nginx's logs are plain files: "
                            "use --lines and --grep with --nginx")
        if match and not follow:
            return f"{match} -- {' '.join(q(f) for f in NGINX_LOGS)} | tail -n {lines}"
        tail = join("tail", "-n", str(lines), *(["-F"] if follow else []), *NGINX_LOGS)
        return f"{tail} | {match}" if match else tail
    # A process type's journal: every release's instance of it, so a deploy's stop and start show in order.
    unit = (layout.process_instances(check_process(process, processes)) if process is not None
            else f"{layout.app}@*.service")
    argv = ["journalctl", "--no-pager", "--output=short-iso", "--unit", unit]
    if since is not None:
        argv += ["--since", check_since(since)]
    if level is not None:
        argv += ["--priority", check_level(level)]
    if match and not follow:
        return f"{join(*argv)} | {match} | tail -n {lines}"
    argv += ["--lines", str(lines), *(["--follow"] if follow else [])]
    return f"{join(*argv)} | {match}" if match else join(*argv)


