"""The shell a deploy, a rollback or `fab config --set` runs to move a release's process types (app.processes)
along with its web instance, built as plain strings (nothing here runs).

The order, and why:
1. after the new web instance answers healthy, `start_and_check` stops the singletons of every other release
   (waited for: the drain), starts every process of the new release and watches them for a few seconds;
   if one does not stay up, the new ones stop, the singletons it stopped start again, and the step fails with
   the failing unit's journal: nothing has switched, the live release keeps serving and working;
2. the switch (tasks.commands.release.switch) then moves the boot links and sends the other releases'
   processes a graceful stop (`after_switch`): SIGTERM, and TimeoutStopSec (the inventory's stop_timeout) for
   the task in hand to finish;
3. when the switch itself fails, `put_back` stops the new release's processes and starts the singletons step 1
   stopped, and reads back what runs.
Every path ends with a read-back of the units' states (`states`), never with what was meant to happen.
"""

from __future__ import annotations

import json

from ..inventory import Process
from ..layout import BOOT_WANTS, Layout
from ..facts.releases import RELEASE_ID
from ..facts.steps import Probe
from .shell import REPORT, join, q

# How far a process must have got to count as "stopping or running" when looking for instances to stop.
_ALIVE = "active,activating,deactivating,reloading"
# The journal lines of a failed process quoted in the deploy's message.
JOURNAL_LINES = 20
# start_and_check's exit status when a process does not stay up.
PROCESS_FAILED = 7


def _checked(release_id: str) -> str:
    if not RELEASE_ID.match(release_id):
        raise ValueError(f"{release_id!r} is not a release id")
    return release_id


def _instances(layout: Layout, name: str) -> str:
    """Shell: the loaded, not inactive instances of a process type, one unit per line."""
    return (f"systemctl list-units --plain --no-legend --state={_ALIVE} {q(layout.process_instances(name))} "
            "| awk '{print $1}'")


def states(units: list[str], more: str = "", key: str = "process_states") -> str:
    """Shell printing one report line {key: {unit: "ActiveState NRestarts"}} read from systemd, for `units` and
    the units in the shell variable `more` (its name)."""
    words = " ".join([*(q(u) for u in units), *([f"${more}"] if more else [])])
    if not words:
        return f"printf '%s\\n' {q(REPORT + ' ' + json.dumps({key: {}}))}"
    return "\n".join([
        f"gw_states=; for gw_u in {words}; do gw_states=\"$gw_states,\\\"$gw_u\\\": \\\"$(systemctl show -p "
        "ActiveState --value \"$gw_u\") $(systemctl show -p NRestarts --value \"$gw_u\")\\\"\"; done",
        f"printf '%s {{\"{key}\": {{%s}}}}\\n' {q(REPORT)} \"${{gw_states#,}}\""])


def start_and_check(layout: Layout, release_id: str, processes: tuple[Process, ...], settle_s: int) -> str:
    """Start `release_id`'s processes and prove they stay up for `settle_s` seconds (active, and not restarted
    by systemd meanwhile); singletons first stop wherever else they run. Reports {"singletons_stopped": [units]}
    and the read-back states; on failure exits PROCESS_FAILED with the failing units' journal on stderr, the new
    processes stopped and the stopped singletons started again."""
    _checked(release_id)
    if not processes:
        return ""
    units = [layout.process_unit(p.name, release_id) for p in processes]
    lines = ["gw_stopped=; gw_bad="]
    for process in processes:
        if not process.singleton:
            continue
        unit = layout.process_unit(process.name, release_id)
        lines += [
            f"# {process.name} is a singleton: any other instance stops (and has stopped) before this one starts.",
            f"for gw_u in $({_instances(layout, process.name)}); do",
            f"  [ \"$gw_u\" = {q(unit)} ] && continue",
            '  gw_stopped="$gw_stopped $gw_u"',
            '  systemctl stop "$gw_u" || true',
            '  if systemctl is-active --quiet "$gw_u"; then',
            f"    printf 'the singleton %s is still running after a stop, so its new instance %s was not "
            f"started (two would run at once)\\n' \"$gw_u\" {q(unit)} >&2",
            '    gw_bad="$gw_bad $gw_u"',
            "  fi",
            "done",
        ]
    lines.append('if [ -z "$gw_bad" ]; then')
    for i, unit in enumerate(units):
        lines += [f"  systemctl reset-failed {q(unit)} 2>/dev/null || true",
                  f"  if ! gw_out=$(systemctl start {q(unit)} 2>&1); then gw_bad=\"$gw_bad {unit}\"; "
                  f"printf 'could not start %s: %s\\n' {q(unit)} \"$gw_out\" >&2; fi",
                  f"  gw_n{i}=$(systemctl show -p NRestarts --value {q(unit)})"]
    lines += [f"  sleep {int(settle_s)}"]
    for i, unit in enumerate(units):
        lines += [f"  gw_state=$(systemctl show -p ActiveState --value {q(unit)}); "
                  f"gw_n=$(systemctl show -p NRestarts --value {q(unit)})",
                  f"  if [ \"$gw_state\" != active ] || [ \"${{gw_n:-0}}\" != \"${{gw_n{i}:-0}}\" ]; then",
                  f"    case \" $gw_bad \" in *\" {unit} \"*) ;; *) gw_bad=\"$gw_bad {unit}\"; "
                  f"printf 'the process %s did not stay up for {int(settle_s)} s (systemd: %s, restarted %s "
                  f"time(s))\\n' {q(unit)} \"$gw_state\" \"$(( ${{gw_n:-0}} - ${{gw_n{i}:-0}} ))\" >&2 ;; esac",
                  "  fi"]
    lines += [
        "fi",
        'if [ -n "$gw_bad" ]; then',
        "  for gw_u in $gw_bad; do",
        "    printf -- '--- the end of its log (journalctl -u %s):\\n' \"$gw_u\" >&2",
        # Python 3.13 underlines tracebacks with ~ and ^ lines: noise in a message.
        f"    journalctl -u \"$gw_u\" -n 300 --no-pager -o cat | grep -vE '^[[:space:]~^]*$' "
        f"| tail -n {JOURNAL_LINES} >&2 || true",
        "  done",
        f"  {join('systemctl', 'stop', *units)} || true",
        '  for gw_u in $gw_stopped; do systemctl start "$gw_u" || true; done',
        "  " + states(units, "gw_stopped").replace("\n", "\n  "),
        f"  exit {PROCESS_FAILED}",
        "fi",
        f"printf '%s {{\"singletons_stopped\": \"%s\"}}\\n' {q(REPORT)} \"${{gw_stopped# }}\"",
        states(units),
    ]
    return "\n".join(lines)


def after_switch(layout: Layout, release_id: str, processes: tuple[Process, ...]) -> list[str]:
    """Once `release_id` is live: its processes start at boot and no other release's do; every other instance
    of each type gets a graceful stop (SIGTERM, then TimeoutStopSec to drain), not waited for."""
    _checked(release_id)
    lines = ["gw_stopping="]
    for process in processes:
        unit = layout.process_unit(process.name, release_id)
        link = layout.process_boot_link(process.name, release_id)
        lines += [
            # The links `systemctl enable` would make, made directly (see release.start_at_boot).
            f"for gw_l in {q(BOOT_WANTS)}/{q(layout.app + '-' + process.name + '@')}*.service; do "
            f"[ \"$gw_l\" = {q(link)} ] || rm -f \"$gw_l\"; done",
            join("ln", "-sfn", layout.process_template_path(process.name), link),
            f"for gw_u in $({_instances(layout, process.name)}); do "
            f"[ \"$gw_u\" = {q(unit)} ] || {{ systemctl stop --no-block \"$gw_u\"; gw_stopping=\"$gw_stopping $gw_u\"; }}; "
            "done",
        ]
    return [*lines, states([], "gw_stopping", "processes_stopping")] if processes else []


def put_back(layout: Layout, release_id: str, processes: tuple[Process, ...], restart: list[str]) -> str:
    """After a failed switch: stop `release_id`'s processes, start the units in `restart` (the singletons the
    deploy stopped) again, and read back the states of both."""
    _checked(release_id)
    units = [layout.process_unit(p.name, release_id) for p in processes]
    return "\n".join([*([join("systemctl", "stop", *units) + " || true"] if units else []),
                      *[join("systemctl", "start", unit) + " || true" for unit in restart],
                      states(units + list(restart))])


def stop_release(layout: Layout, release_id: str) -> list[str]:
    """Every process of a release that is not live (set aside, pruned) stopped, and not started at boot."""
    return [join("systemctl", "stop", layout.process_units_of(release_id)) + " 2>/dev/null || true",
            f"rm -f {q(BOOT_WANTS)}/{q(layout.app + '-')}*{q('@' + release_id + '.service')}"]


def parse_units(out: str, rc: int) -> dict[str, str] | None:
    """`systemctl list-units --all` lines -> {unit: ActiveState}; None when it could not run."""
    if rc != 0:
        return None
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].endswith(".service"):
            found[fields[0]] = fields[2]
    return found


def units_probe(layout: Layout) -> Probe:
    """Every loaded instance of any APP-*@ unit and its ActiveState (process types among them: the caller
    knows their names)."""
    return Probe("process_units", f"systemctl list-units --all --plain --no-legend {q(layout.app + '-*@*.service')}",
                 parse_units)


def split_unit(layout: Layout, unit: str) -> tuple[str, str] | None:
    """APP-NAME@RELEASE.service -> (NAME, RELEASE), or None for a unit of another kind."""
    prefix = f"{layout.app}-"
    if not (unit.startswith(prefix) and unit.endswith(".service") and "@" in unit):
        return None
    name, _, release = unit[len(prefix):-len(".service")].partition("@")
    return (name, release) if name and release else None
