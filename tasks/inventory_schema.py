"""The inventory's shape, for pydantic: each section's keys, their types, a hint for the reader and the check.

Imported only when an inventory is read (tasks/inventory.py, parse): pydantic costs some 80 ms of start-up
that `fab --list` and a task run without an inventory should not pay. The checks themselves are the check_*
functions of tasks/inventory.py; the defaults are the dataclasses' (tasks/defaults.py): a key left out is
left out here too. What pydantic finds is rewritten as gangway's one-line message: the key, the value, the fix.
"""

import difflib
from typing import Annotated, Any, Callable, Iterator

from annotated_types import GroupedMetadata

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from . import inventory as inv


def _refuse(text: str) -> PydanticCustomError:
    return PydanticCustomError("inventory", "{text}", {"text": text})


def _checked(check: Callable[[Any], str | None]) -> AfterValidator:
    def validate(value: Any) -> Any:
        if problem := check(value):
            raise _refuse(f"{value!r} {problem}")
        return value
    return AfterValidator(validate)


class Key(GroupedMetadata):
    """What a key is (said when it is missing or of the wrong type), and the check its value must pass."""

    def __init__(self, hint: str, check: Callable[[Any], str | None] | None = None):
        self.hint, self.check = hint, check

    def __iter__(self) -> Iterator[Any]:
        return iter([_checked(self.check)] if self.check else [])


def Each(kind: type, check: Callable[[Any], str | None]) -> Any:
    """A list whose every item is of `kind` and passes `check`."""
    return list[Annotated[kind, _checked(check)]]


def _env_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _refuse(f"must be a string or a number, found {_kind(value)}")
    if problem := inv.check_env_value(str(value)):
        raise _refuse(f"{str(value)!r} {problem}")
    return str(value)


class Section(BaseModel):
    """A mapping in the file: no key but these, no type coercion ("22" is not a port), `key:` alone is absent."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        """An unknown key first (a misspelt one is not also missing); then drop the keys set to nothing."""
        if not isinstance(data, dict):
            return data
        for name in data:
            if name not in cls.model_fields:
                raise PydanticCustomError("unknown_key", "unknown key", {"key": name})
        return {k: v for k, v in data.items() if v is not None}

    def given(self, *leave: str) -> dict[str, Any]:
        """The keys the file sets, apart from `leave`: the rest keep the dataclass's defaults."""
        return {k: getattr(self, k) for k in self.model_fields_set if k not in leave}



# Each section: `key: Annotated[type, Key(what it is, its check)]`, `= None` when it may be left out.
class HostKeys(Section):
    address: Annotated[str, Key("the server's IP address or host name", inv.check_address)]
    user: Annotated[str, Key("the SSH user for the first connection (root, or a user with sudo)",
                             inv.check_unix_user)] = None
    port: Annotated[int, Key("the SSH port", inv.check_port)] = None
    key: Annotated[str, Key("path of your SSH private key, e.g. ~/.ssh/id_ed25519", inv.check_local_path)] = None


class JobKeys(Section):
    name: Annotated[str, Key("a short name for the job, e.g. clearsessions", inv.check_job_name)]
    command: Annotated[str, Key("what follows `manage.py`, e.g. clearsessions or 'send_reminders --days 3'",
                                inv.check_job_command)]
    schedule: Annotated[str, Key("when it runs: daily, hourly, weekly, or e.g. '*-*-* 03:00:00'",
                                 inv.check_schedule)]


class BuildKeys(Section):
    command: Annotated[str, Key("the shell command run in the project directory on this machine before packing, "
                                "e.g. npm ci && npx gulp build", inv.check_local_path)]
    outputs: Annotated[Each(str, inv.check_relative_path), Key("the paths (relative to the project) the command "
                                                               "writes that ship with the release, e.g. [static/dist]")]


class AppKeys(Section):
    name: Annotated[str, Key("the app's short name, e.g. mysite", inv.check_app_name)]
    domains: Annotated[Each(str, inv.check_domain),
                       Key("the domain names the site answers on, e.g. [example.com, www.example.com]")] = None
    wsgi_module: Annotated[str, Key("the Django project's WSGI module, e.g. mysite.wsgi",
                                    inv.check_python_module)] = None
    max_upload_mb: Annotated[int, Key("the largest request body nginx accepts, in MB", inv.check_positive)] = None
    source: Annotated[str, Key("the Django project's directory (with manage.py), relative to this file",
                               inv.check_local_path)] = None
    requirements: Annotated[str, Key("the requirements file, relative to the project",
                                     inv.check_relative_path)] = None
    health_check: Annotated[str, Key("the path a new release must answer before it gets traffic, e.g. /healthz/",
                                     inv.check_url_path)] = None
    keep_releases: Annotated[int, Key("how many good releases to keep on the server", inv.check_at_least_two)] = None
    keep_failed: Annotated[int, Key("how many failed releases to keep aside for inspection",
                                    inv.check_positive)] = None
    keep_backups: Annotated[int, Key("how many database dumps (taken before migrations) to keep",
                                     inv.check_positive)] = None
    standby_minutes: Annotated[int, Key("how long the previous release keeps running after a switch, for an "
                                        "instant rollback (0: stop it at once)", inv.check_not_negative)] = None
    settings_module: Annotated[str, Key("the settings module production uses, e.g. mysite.settings_production "
                                        "(default: the one manage.py names)", inv.check_python_module)] = None
    env: Annotated[dict[Annotated[str, _checked(inv.check_env_name)], Annotated[Any, AfterValidator(_env_value)]],
                   Key("the app's own non-secret environment variables, e.g. {SENTRY_ENVIRONMENT: production}")] = None
    build: Annotated[BuildKeys, Key("a local build step before packing: {command: 'npm ci && npm run build', "
                                    "outputs: [static/dist]}")] = None
    jobs: Annotated[list[JobKeys], Key("management commands run on a schedule: [{name: clearsessions, "
                                       "command: clearsessions, schedule: daily}]")] = None


class AcmeKeys(Section):
    email: Annotated[str, Key("the e-mail address for the ACME account (expiry notices)", inv.check_email)] = None
    directory: Annotated[str, Key("the ACME directory URL (Let's Encrypt by default)", inv.check_https_url)] = None
    ca_bundle: Annotated[str, Key("a PEM file the ACME client trusts for a private or test CA",
                                  inv.check_local_path)] = None


class ProxyKeys(Section):
    url: Annotated[str, Key("the outbound HTTP proxy, e.g. http://proxy.internal:3128", inv.check_proxy_url)]
    no_proxy: Annotated[Each(str, inv.check_no_proxy), Key("hosts reached directly, not through the proxy")] = None


class BackupKeys(Section):
    time: Annotated[str, Key('when the daily backup runs, HH:MM server time, in quotes, e.g. "03:15"',
                             inv.check_time_of_day)] = None
    keep_daily: Annotated[int, Key("how many days' scheduled backups to keep (the newest of each day)",
                                   inv.check_positive)] = None
    keep_weekly: Annotated[int, Key("how many weeks' scheduled backups to keep besides (the newest of each week)",
                                    inv.check_not_negative)] = None


class InventoryKeys(Section):
    app: Annotated[AppKeys, Key("the app: name, domains")]
    hosts: Annotated[list[HostKeys], Key("the servers: a list of {address, user, port, key}")] = None
    acme: Annotated[AcmeKeys, Key("where TLS certificates come from: email, directory, ca_bundle")] = None
    proxy: Annotated[ProxyKeys, Key("an outbound HTTP proxy for servers that reach the internet only through "
                                    "one")] = None
    deploy_user: Annotated[str, Key("the account you and fab log in as after provisioning",
                                    inv.check_deploy_user)] = None
    ssh_keys: Annotated[Each(str, inv.check_public_key),
                        Key("more public keys allowed to log in as the deploy user")] = None
    backups: Annotated[BackupKeys, Key('the scheduled daily database backup: {time: "03:15", keep_daily: 7, '
                                       'keep_weekly: 4}')] = None
    known_hosts: Annotated[str, Key("the file that holds these servers' SSH host keys instead of "
                                    "~/.ssh/known_hosts, relative to this file, e.g. production.known_hosts",
                                    inv.check_local_path)] = None

def validate(data: Any, source: str) -> InventoryKeys:
    """The file's data, checked; raises InventoryError with the first problem, as `SOURCE: KEY: what and fix`."""
    try:
        return InventoryKeys.model_validate(data)
    except ValidationError as error:
        raise inv.InventoryError(f"{source}: {_message(error.errors(include_url=False)[0])}") from None


_TYPE_NAMES = {"string_type": "a string", "int_type": "a number", "list_type": "a list",
               "dict_type": "a mapping (key: value lines)", "model_type": "a mapping (key: value lines)"}


def _message(error: Any) -> str:
    loc, kind = list(error["loc"]), error["type"]
    if kind == "unknown_key":
        loc.append(error["ctx"]["key"])
    named = kind == "unknown_key" or loc[-1:] == ["[key]"]  # the error is about the key itself
    loc = [part for part in loc if part != "[key]"]
    section, field = InventoryKeys, None  # the section the error is in, and the field the path ends on
    for part in loc[:-1] if named else loc:
        field = section.model_fields.get(part) if isinstance(part, str) else None
        inner = [t for t in _types(field.annotation if field else None) if isinstance(t, type)
                 and issubclass(t, Section)]
        section = inner[0] if inner else section
    path = _path(loc, named)
    if kind == "inventory":
        return f"{path}: {error['msg']}"
    if kind == "unknown_key":
        close = difflib.get_close_matches(str(loc[-1]), section.model_fields, n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(section.model_fields)}"
        return f"{path}: unknown key; {fix}"
    hint = next((m.hint for m in field.metadata if isinstance(m, Key)), "") if field and not named else ""
    if kind == "missing":
        return f"{path}: is missing; add it: {hint}"
    if kind in _TYPE_NAMES:
        hint = f" ({hint})" if hint else ""
        return f"{path}: must be {_TYPE_NAMES[kind]}{hint}, found {_kind(error['input'])}"
    return f"{path}: {error['msg']}"


def _types(annotation: Any) -> list[Any]:
    """The annotation and every type inside it (list[X] gives X, Annotated[X, ...] gives X)."""
    return [annotation] + [t for arg in getattr(annotation, "__args__", ()) for t in _types(arg)]


def _path(loc: list[Any], named: bool) -> str:
    """`app.domains[1]`, `app.env.NAME`; a key with a line break in it must not break the one-line message."""
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and not isinstance(part, bool) and path and not (named and i == len(loc) - 1):
            path += f"[{part}]"
        else:
            name = part if isinstance(part, str) and part.isprintable() else repr(part)
            path = f"{path}.{name}" if path else name
    return path or "top level"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    return f"{type(value).__name__} {value!r}" if isinstance(value, (int, float, str)) else type(value).__name__
