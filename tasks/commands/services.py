"""Builders for the services the inventory's `services` asks for (today: Redis). Pure: values, no I/O.

The Redis password is made on the server by `new_password` and stays there: the app's URLs are written into
its environment file by the server-side program (templates/programs/env_file.py) from the password file, and
`ping` reads Redis with it as root. No command built here holds the password.
"""

from __future__ import annotations

import inspect

from .. import defaults
from ..inventory import Inventory
from ..layout import REDIS_SECRET, Layout
from . import programs
from .envfile import ENV_FILE_MARK, reader_source
from .shell import REPORT, join, q

REDIS = "redis"
# The variables the services give the app: their values hold a password, so a preview never shows them.
SERVICE_VARIABLES = tuple(defaults.REDIS_DATABASES)


def redis_urls() -> dict[str, str]:
    """{variable: URL} the app gets, with `{password}` where the server puts the password (hex: no escaping)."""
    base = f"redis://:{{password}}@{defaults.REDIS_HOST}:{defaults.REDIS_PORT}"
    return {name: f"{base}/{db}" for name, db in defaults.REDIS_DATABASES.items()}


def env_services(inventory: Inventory) -> dict | None:
    """What the environment-file program needs to write the services' variables; None without services."""
    if REDIS not in inventory.services:
        return None
    return {"secret": REDIS_SECRET, "urls": redis_urls()}


def new_password() -> str:
    """Make the password file once, on the server, root's alone: 32 random bytes as hex, from the kernel, through
    a pipe into the file (no command line ever holds it). An existing file is kept."""
    tmp = f"{REDIS_SECRET}.gw-new"
    return (f"if [ ! -s {q(REDIS_SECRET)} ]; then (umask 077 && rm -f {q(tmp)} && "
            f"{{ printf 'requirepass '; od -An -vtx1 -N32 /dev/urandom | tr -d ' \\n'; echo; }} > {q(tmp)} && "
            f"chown root:root {q(tmp)} && mv -f {q(tmp)} {q(REDIS_SECRET)}); fi")


# The reader of the password file, sent to the server in front of the programs that need it.

def redis_password(path):
    """(password, None) from the password file, or (None, why it cannot be used)."""
    import os
    import stat
    try:
        info = os.stat(path)
        with open(path) as f:
            words = f.read().split()
    except OSError as error:
        return None, "cannot be read (%s): `fab provision` makes it" % (error.strerror or error)
    if len(words) != 2 or words[0] != "requirepass" or not all(c in "0123456789abcdef" for c in words[1]):
        return None, "does not hold one 'requirepass HEX' line: remove it and run `fab provision` to make one"
    if info.st_uid != 0 or stat.S_IMODE(info.st_mode) & 0o077:
        return None, ("is not root's alone (mode %o): run `fab provision` to make it so, and change the password "
                      "(remove the file, then `fab provision` again)" % stat.S_IMODE(info.st_mode))
    return words[1], None


def password_reader_source() -> str:
    return inspect.getsource(redis_password) + "\n"


def env_state(layout: Layout, inventory: Inventory) -> str:
    """Which of the services' variables the app's shared/env lacks or has wrong, by name
    (templates/programs/env_services.py), as root; reads only."""
    wanted = env_services(inventory)
    return programs.fed(join("python3", "-B", "-c", programs.BOOTSTRAP), "env_services.py",
                        {"path": layout.env_file, "mark": ENV_FILE_MARK, "names": sorted(SERVICE_VARIABLES),
                         "services": wanted, "report": REPORT},
                        reader_source() + password_reader_source() + programs.source("env_services.py"))


def ping(layout: Layout, require: bool = False) -> str:
    """Redis as the app sees it (templates/programs/redis_ping.py), as root: one report line; with `require`,
    fails unless it answers the password, refuses a client without it and listens on loopback only."""
    return programs.fed(join("python3", "-B", "-c", programs.BOOTSTRAP), "redis_ping.py",
                        {"secret": REDIS_SECRET, "host": defaults.REDIS_HOST, "port": defaults.REDIS_PORT,
                         "env": layout.env_file, "urls": redis_urls(), "require": require, "report": REPORT},
                        reader_source() + password_reader_source() + programs.source("redis_ping.py"))
