"""Render the Jinja2 templates in templates/ into config file contents: pure, so unit tests can check them.

Values from the inventory are checked before they get here, but a template is the last place that knows
which syntax a value lands in, so it escapes (or refuses) by that syntax too: a filter per config language.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..oneline import control_problem

# In this repository templates/ sits beside tasks/; installed, the package carries it inside (see pyproject.toml).
# Installed, templates/ is inside the package; in this repository it is beside tasks/.
_PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = _PACKAGE / "templates" if (_PACKAGE / "templates").is_dir() else _PACKAGE.parent / "templates"
HEADER = "Written by gangway from templates/{name}; edits here are replaced on the next provision."


class UnsafeValue(ValueError):
    """A value that cannot be written safely into the config file it was meant for."""


def _refuse_control(value: str, where: str) -> str:
    value = str(value)
    if problem := control_problem(value):
        raise UnsafeValue(f"{value!r} cannot be written into {where}: it {problem}, which would end the line "
                          "and start a new setting")
    return value


def apt_quote(value: str) -> str:
    """A value for apt.conf, in double quotes. apt's syntax has no escape for `"`, so it is refused."""
    value = _refuse_control(value, "an apt configuration file")
    if bad := set(value) & {'"', "\\"}:
        raise UnsafeValue(f"{value!r} cannot be written into an apt configuration file: it contains "
                          f"{''.join(sorted(bad))!r}, which apt's quoted values cannot hold")
    return f'"{value}"'


def systemd_quote(value: str) -> str:
    """One word of a systemd unit setting, in double quotes: `\\` and `"` backslash-escaped, `%` as `%%`
    (systemd expands %-specifiers inside quotes too). e.g. Environment={{ "K=" ~ v | systemd_quote }}."""
    value = _refuse_control(value, "a systemd unit file")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def systemd_exec_word(value: str) -> str:
    """One argument of an Exec*= command line: `systemd_quote`, and `$` as `$$` (systemd expands $VARIABLES
    in command lines, inside quotes too), so the program receives exactly `value`."""
    return systemd_quote(value).replace("$", "$$")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name(value: str) -> str:
    """An environment variable's name, as systemd and the shell accept it."""
    if not _ENV_NAME.fullmatch(str(value)):
        raise UnsafeValue(f"{value!r} is not an environment variable name (letters, digits and _)")
    return value


_NGINX_SAFE = re.compile(r"[A-Za-z0-9._~/:@%+,=\[\]*-]+")


def nginx_value(value: str) -> str:
    """A bare nginx token (a name, a path, a size): nothing nginx reads as syntax or as a $variable."""
    value = _refuse_control(str(value), "an nginx configuration file")
    if not _NGINX_SAFE.fullmatch(value):
        raise UnsafeValue(f"{value!r} cannot be written into an nginx configuration file as a bare value: "
                          "spaces, quotes, $, ;, {, }, # and backslashes are nginx syntax")
    return value


FILTERS = {"apt_quote": apt_quote, "systemd_quote": systemd_quote, "systemd_exec_word": systemd_exec_word,
           "env_name": env_name,
           "nginx_value": nginx_value}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render(name: str, **values) -> str:
    """templates/NAME rendered with `values`; a missing value is an error, never an empty string, and a value
    a filter refuses raises UnsafeValue naming the template."""
    try:
        return _environment().get_template(name).render(header=HEADER.format(name=name), **values)
    except UnsafeValue as error:
        raise UnsafeValue(f"templates/{name}: {error}") from None
