"""Server programs: Python files in the package (templates/programs/, templates/deploy/), run on the server with
their arguments as JSON on their standard input. Nothing here runs them; the builders return the shell that
does, for a step of a script.

A program is an ordinary file: pyflakes checks it in the unit tests, and it runs as it is, anywhere
(`python3 prune_static.py < args.json`). It reads `json.load(sys.stdin)` and prints its result as one report
line (`@gangway {...}`, see tasks.commands.shell.report). No value is ever spliced into its source: the program and its
arguments travel together as one JSON document in a here-document of the script, which itself travels on the
SSH command's input (tasks.connection.remote), so neither has a size limit.
"""

from __future__ import annotations

import json

from .render import TEMPLATES
from .shell import as_user, join

PROGRAMS = TEMPLATES / "programs"

# Runs the program in the JSON document on its input: the program gets its own arguments as its input, and
# runs as a script would (__name__ == "__main__"). The same small, constant line for every program.
BOOTSTRAP = ("import io, json, sys; _g = json.load(sys.stdin); sys.stdin = io.StringIO(json.dumps(_g['args'])); "
             "sys.argv = [_g['name']]; exec(compile(_g['program'], _g['name'], 'exec'), {'__name__': '__main__'})")
# Ends the here-document; a JSON document on one line never equals it.
END = "GANGWAY_PROGRAM_INPUT"


def source(name: str) -> str:
    """The text of templates/programs/NAME."""
    return (PROGRAMS / name).read_text()


def document(name: str, args: dict, text: str | None = None) -> str:
    """The JSON line a program is run from: its name, its source, its arguments."""
    return json.dumps({"name": name, "program": source(name) if text is None else text, "args": args})


def fed(command: str, name: str, args: dict, text: str | None = None) -> str:
    """`command` (which runs BOOTSTRAP) with the program's document as its input: a here-document, so the
    result is a few lines that must stand on their own lines of a script (also inside `$( )`)."""
    return f"{command} <<'{END}'\n{document(name, args, text)}\n{END}\n"


def python(name: str, args: dict, user: str | None = None, text: str | None = None) -> str:
    """Run a program with the server's python3, as root or as `user`."""
    command = join("python3", "-c", BOOTSTRAP)
    return fed(as_user(user, command) if user else command, name, args, text)
