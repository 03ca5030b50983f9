"""Process types (the inventory's app.processes): one systemd template unit each, APP-NAME@.service, whose
instances (one per release) `fab deploy` starts and stops; nothing left of a type that is no longer in the
inventory. `fab deploy` compares the server's template files with these (`drift`) and refuses when they differ,
naming `fab provision`: a release must not start its workers with a definition the inventory no longer has."""

from __future__ import annotations

import hashlib

from . import Server
from .. import defaults
from ..inventory import Inventory, Process
from ..layout import BOOT_WANTS, PROCESS_MARK, Layout
from ..commands.render import render, systemd_exec_word
from ..commands.shell import join, q
from ..facts.steps import Change, Check, Facts, File, Probe, Step


def _word(text: str) -> str:
    """`text` as it stands inside one double-quoted Exec word (see systemd_exec_word)."""
    return systemd_exec_word(text)[1:-1]


def exec_start(layout: Layout, process: Process) -> str:
    """The ExecStart= line of a process type: its first word resolved in the release being run (%i):
    manage.py -> the release's Python with manage.py; a bare name -> the program of the release's venv
    (.venv/bin/NAME); a relative path -> that file of the release; an absolute path as it is. Every word is
    quoted for systemd, so it reaches the program exactly as the inventory wrote it ($, %, quotes and all)."""
    program, *args = process.command
    release = f'"{_word(layout.releases + "/")}%i'
    if program == "manage.py":
        first, args = f'{release}{_word("/.venv/bin/python")}"', ["manage.py", *args]
    elif program.startswith("/"):
        first = systemd_exec_word(program)
    elif "/" in program:
        first = f'{release}{_word("/" + program.removeprefix("./"))}"'
    else:
        first = f'{release}{_word("/.venv/bin/" + program)}"'
    return " ".join([first, *(systemd_exec_word(word) for word in args)])


def unit_file(inventory: Inventory, process: Process) -> str:
    layout = Layout(inventory.app.name)
    return render("systemd/process@.service.j2", mark=PROCESS_MARK, app=inventory.app.name, process=process.name,
                  command_line=join(*process.command), singleton=process.singleton,
                  stop_timeout=process.stop_timeout, restart_s=defaults.PROCESS_RESTART_S,
                  releases=layout.releases, env_file=layout.env_file, config_env=layout.config_env,
                  media=layout.media, exec_start=exec_start(layout, process),
                  state_dir=layout.process_state_dir(process.name))


def unit_files(inventory: Inventory) -> dict[str, str]:
    """{unit file name: content} of every process type in the inventory."""
    layout = Layout(inventory.app.name)
    return {layout.process_template(p.name): unit_file(inventory, p) for p in inventory.app.processes}


def _parse_files(out: str, rc: int) -> dict[str, str] | None:
    """"NAME SHA256" lines into {NAME: SHA256}; None when the listing failed (never "no process types")."""
    if rc != 0:
        return None
    found = {}
    for line in out.splitlines():
        name, _, sha = line.partition(" ")
        if name and sha.strip():
            found[name] = sha.strip()
    return found


def files_probe(layout: Layout) -> Probe:
    """{template file name: sha256} of the process types provision wrote for this app (the files whose first
    line is PROCESS_MARK: another tool's APP-something@.service is not taken for one)."""
    return Probe("process_files",
                 f'for f in {q(layout.process_template_prefix)}*@.service; do [ -f "$f" ] || continue; '
                 f'head -n 1 "$f" | grep -qF {q(PROCESS_MARK)} || continue; '
                 'echo "${f##*/} $(sha256sum < "$f" | cut -c1-64)"; done', _parse_files)


def drift(inventory: Inventory, on_server: dict[str, str] | None) -> list[str]:
    """The process unit files a provision would write or remove. Unknown (the probe failed) is no drift."""
    if on_server is None:
        return []
    wanted = as_provisioned(inventory)
    return sorted(name for name in wanted.keys() | on_server.keys() if wanted.get(name) != on_server.get(name))


def as_provisioned(inventory: Inventory) -> dict[str, str]:
    """What `files_probe` answers on a server provisioned with `inventory`."""
    return {name: hashlib.sha256(text.encode()).hexdigest() for name, text in unit_files(inventory).items()}


def refusal(differ: list[str]) -> str:
    return (f"the process units on the server differ from the inventory's app.processes ({', '.join(differ)}), "
            "and the release's processes would start with the old definition. Run `fab provision`, then deploy")


def _name_of(layout: Layout, file_name: str) -> str:
    """The process type a template file name belongs to: APP-NAME@.service -> NAME."""
    return file_name[len(layout.app) + 1:-len("@.service")]


def remove_type(layout: Layout, name: str) -> tuple[str, ...]:
    """Stop every instance of a process type (a graceful stop, waited for), drop their boot links and the
    template: what is left of a type taken out of the inventory."""
    pattern = layout.process_instances(name)
    return (join("systemctl", "stop", pattern) + " || true",
            f"rm -f {q(BOOT_WANTS)}/{q(layout.app + '-' + name + '@')}*.service",
            join("rm", "-f", layout.process_template_path(name)))


def install(server: Server, files: dict[str, File]):
    """Remove the types that left the inventory; reload systemd when a template was written or removed."""
    def decide(on_server: dict[str, str] | None, facts: Facts) -> list[Change]:
        layout = server.layout
        stale = sorted(name for name in (on_server or {}) if name not in files)
        changes = [Change(f"{name} removed, its running instances stopped (no longer in app.processes)",
                          remove_type(layout, _name_of(layout, name))) for name in stale]
        written = [name for name, file in files.items() if file.plan(facts)]
        if stale or written:
            changes.append(Change("systemd reloaded", ("systemctl daemon-reload",)))
        return changes
    return decide


def units(server: Server) -> Step:
    """The process types' template units. A release's instances are started by `fab deploy`, so a type that is
    new or changed here runs (as it is now) from the next deploy, or `fab config --set`."""
    layout = server.layout
    files = {name: File(f"{layout.process_template_path(_name_of(layout, name))}", content)
             for name, content in unit_files(server.inventory).items()}
    names = ", ".join(f"{p.name}{' (singleton)' if p.singleton else ''}" for p in server.inventory.app.processes)
    return Step("process types", [*files.values(), Check(files_probe(layout), install(server, files))],
                note=f"{names}: {layout.app}-NAME@RELEASE.service, started by each deploy"
                if names else "none in the inventory (app.processes)",
                # Only a type written here waits for a deploy: one taken out is stopped by this step itself.
                changed_note="the live release's processes run this from the next `fab deploy` (or `fab config --set`)"
                if names else "")
