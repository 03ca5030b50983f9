"""Builders for the services the inventory's `services` asks for (today: Redis), and for the media store's
credentials (`media`). Pure: values, no I/O.

The Redis password is made on the server by `new_password` and stays there: the app's URLs are written into
its environment file by the server-side program (templates/programs/env_file.py) from the password file, and
`ping` reads Redis with it as root. No command built here holds the password. The media store's key and secret
come from the operator once (tasks/provisioning/media.py writes them, root's alone) and reach the app's
environment file the same way, from that file on the server.
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
# The media store's credentials, by the names django-storages' S3 backend (and boto3 itself) read.
MEDIA_SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# The variables the services give the app: their values hold a secret, so a preview never shows them.
SERVICE_VARIABLES = (*defaults.REDIS_DATABASES, *MEDIA_SECRET_VARIABLES)


def redis_urls() -> dict[str, str]:
    """{variable: URL} the app gets, with `{password}` where the server puts the password (hex: no escaping)."""
    base = f"redis://:{{password}}@{defaults.REDIS_HOST}:{defaults.REDIS_PORT}"
    return {name: f"{base}/{db}" for name, db in defaults.REDIS_DATABASES.items()}


def env_services(inventory: Inventory) -> dict | None:
    """What the environment-file program needs to write the services' variables: Redis's password file and
    URLs, the media store's credentials file; None when there are none."""
    wanted = {**({"secret": REDIS_SECRET, "urls": redis_urls()} if REDIS in inventory.services else {}),
              **({"media": Layout(inventory.app.name).media_credentials} if inventory.media else {})}
    return wanted or None


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


def media_keys(path):
    """({variable: value} from the media store's credentials file, None), or (None, why it cannot be used)."""
    import json
    import os
    import stat
    try:
        info = os.stat(path)
        with open(path) as f:
            keys = json.load(f)
    except (OSError, ValueError) as error:
        return None, "cannot be read (%s): run `fab provision` with the store's key in your environment" % (
            getattr(error, "strerror", None) or error)
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    if not isinstance(keys, dict) or sorted(keys) != sorted(names) or not all(
            isinstance(v, str) and v and all(c.isascii() and (c.isalnum() or c in "+/=._~-") for c in v)
            for v in keys.values()):
        return None, "does not hold the two keys as provision writes them: run `fab provision` again"
    if info.st_uid != 0 or stat.S_IMODE(info.st_mode) & 0o077:
        return None, "is not root's alone (mode %o): run `fab provision` to make it so" % stat.S_IMODE(info.st_mode)
    return keys, None


def service_values(services):
    """({variable: value} the services give the app, None) from their files on the server, or (None, why not)."""
    values = {}
    if services.get("secret"):
        password, problem = redis_password(services["secret"])
        if problem:
            return None, "the Redis password file %s %s" % (services["secret"], problem)
        values.update({name: url.replace("{password}", password) for name, url in services["urls"].items()})
    if services.get("media"):
        keys, problem = media_keys(services["media"])
        if problem:
            return None, "the media store's credentials file %s %s" % (services["media"], problem)
        values.update(keys)
    return values, None


def password_reader_source() -> str:
    """The readers of the services' secret files, sent in front of the programs that need them."""
    return "\n".join(inspect.getsource(f) for f in (redis_password, media_keys, service_values)) + "\n"


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
