"""How big an environment the app can start with, checked before a deploy or `fab config` changes anything.

Linux refuses to start a program (execve fails with E2BIG, and systemd's instance never runs) when one
"NAME=value" string is longer than MAX_ARG_STRLEN (32 pages: 128 KiB, its final NUL included), or when its
arguments and environment together, strings and their pointers, pass a quarter of its stack limit (ARG_MAX:
2 MiB with the usual 8 MiB stack). A health check cannot tell that from a slow start, so the sizes are
added up here, from the inventory's values and from what the server's two environment files hold (read as
names and sizes: no value leaves the server).
"""

from __future__ import annotations

from ..layout import Layout
from ..commands import programs
from ..commands.envfile import reader_source
from ..commands.shell import join
from .steps import Probe, last_json

KIB, MIB = 1024, 1024 * 1024
MAX_ARG_STRLEN = 32 * 4096  # one argument or "NAME=value" string, its terminating NUL included
DEFAULT_ARG_MAX = 2 * MIB   # a quarter of the usual 8 MiB stack
KERNEL_CAP = 6 * MIB        # three quarters of _STK_LIM: the most Linux allows, whatever the stack limit
POINTER = 8
# What the app's process gets besides the two files: systemd's own variables (PATH, INVOCATION_ID,
# JOURNAL_STREAM, RUNTIME_DIRECTORY, MEMORY_PRESSURE_*, ...), the unit's (GANGWAY_RELEASE, DJANGO_STATIC_ROOT,
# PYTHON*), and Gunicorn's command line: well under this.
RESERVE = 8 * KIB

ENV = "the server's shared/env"
INVENTORY = "app.env in the inventory"
GANGWAY = "set by gangway"
CONFIG = "fab config"

def probe(layout: Layout) -> Probe:
    """The sizes in the server's two environment files (templates/programs/env_sizes.py), as root."""
    from ..commands.release import ENV_FILE_MARK
    return Probe("env_sizes", programs.fed(join("python3", "-B", "-c", programs.BOOTSTRAP), "env_sizes.py",
                                           {"env": layout.env_file, "config": layout.config_env,
                                            "mark": ENV_FILE_MARK},
                                           reader_source() + programs.source("env_sizes.py")), last_json)


def after_deploy(found: dict | None, managed: dict[str, str], inventory_env: set[str]) -> dict[str, tuple[int, str]]:
    """{name: (value bytes, where it comes from)} once a deploy has rewritten shared/env with `managed`."""
    found = found or {}
    gone = set(found.get("managed", [])) - set(managed) - {"DJANGO_SECRET_KEY"}
    sizes = {name: (size, ENV) for name, size in found.get("env", {}).items() if name not in gone}
    sizes["DJANGO_SECRET_KEY"] = sizes.get("DJANGO_SECRET_KEY", (70, ENV))  # made by the first deploy
    for name, value in managed.items():
        sizes[name] = (len(value.encode()), INVENTORY if name in inventory_env else GANGWAY)
    for name, size in found.get("config", {}).items():  # read after shared/env: a name in both is fab config's
        sizes[name] = (size, CONFIG)
    return sizes


def after_config(found: dict | None, config: dict[str, str]) -> dict[str, tuple[int, str]]:
    """{name: (value bytes, where it comes from)} once `fab config` has written `config`."""
    sizes = {name: (size, ENV) for name, size in (found or {}).get("env", {}).items()}
    for name, value in config.items():
        sizes[name] = (len(value.encode()), CONFIG)
    return sizes


def limit_of(found: dict | None) -> int:
    arg_max = (found or {}).get("arg_max") or DEFAULT_ARG_MAX
    return min(int(arg_max), KERNEL_CAP) if int(arg_max) > 0 else DEFAULT_ARG_MAX


def _size(n: float) -> str:
    return f"{n / MIB:.2f} MiB" if n >= MIB else f"{n / KIB:.1f} KiB"


def problem(sizes: dict[str, tuple[int, str]], limit: int) -> str | None:
    """Why the app could not start with this environment (one sentence, with the sizes and the limit), or None."""
    strings = {name: len(name) + 1 + size + 1 for name, (size, _) in sizes.items()}  # NAME=value and its NUL
    too_long = sorted((name for name, n in strings.items() if n > MAX_ARG_STRLEN), key=lambda n: -strings[n])
    if too_long:
        named = ", ".join(f"{name} ({_size(strings[name])}, {sizes[name][1]})" for name in too_long)
        return (f"the app's environment has a variable Linux will not pass to a program: {named}; one NAME=value "
                f"may be at most {_size(MAX_ARG_STRLEN)} (MAX_ARG_STRLEN), so the app would never start")
    total = sum(strings.values()) + POINTER * len(strings) + RESERVE
    if total <= limit:
        return None
    biggest = sorted(strings, key=lambda n: -strings[n])[:3]
    return (f"the app's environment would be {_size(total)} (its {len(strings)} variables, with "
            f"{_size(RESERVE)} for systemd's own and Gunicorn's command line), past the {_size(limit)} Linux lets "
            f"a program start with on this server (arguments and environment together: ARG_MAX, a quarter of "
            f"the stack limit), so the app would never start. Largest: "
            + ", ".join(f"{name} ({_size(strings[name])}, {sizes[name][1]})" for name in biggest))


ADVICE = "keep large data in a file or the database, and give the app its path or address in a variable"
