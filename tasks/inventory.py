"""The inventory: one YAML file per environment in `inventory/`, validated before anything touches a server.

Every error names the file, the key and the fix, because the person reading it may never have edited YAML
for a server before. Loading is pure apart from reading the file and checking that key files exist.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from . import defaults
from .oneline import control_problem
from .commands.shell import join

INVENTORY_DIR = Path(__file__).resolve().parent.parent / "inventory"


class InventoryError(Exception):
    """An inventory that cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class Host:
    address: str
    user: str = "root"
    port: int = 22
    key: Path | None = None
    # What the host does (defaults.ROLES); empty: everything one server does (defaults.SINGLE_SERVER_ROLES).
    roles: tuple[str, ...] = ()
    # The address the other servers reach it at (a private network); None: `address`.
    private_address: str | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.address}" + (f":{self.port}" if self.port != 22 else "")

    @property
    def peer_address(self) -> str:
        """Where the other servers of the layout reach this one."""
        return self.private_address or self.address

    def has(self, role: str) -> bool:
        return role in (self.roles or defaults.SINGLE_SERVER_ROLES)


@dataclass(frozen=True)
class Acme:
    email: str | None = None
    directory: str = defaults.ACME_DIRECTORY
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class Proxy:
    url: str
    no_proxy: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        """The variables that make apt, pip and certbot use the proxy."""
        env = {"http_proxy": self.url, "https_proxy": self.url,
               "HTTP_PROXY": self.url, "HTTPS_PROXY": self.url}
        if self.no_proxy:
            env["no_proxy"] = env["NO_PROXY"] = ",".join(self.no_proxy)
        return env


@dataclass(frozen=True)
class Build:
    """A local command run in the project before packing (e.g. `npm ci && npx gulp build`), and the paths it
    writes that ship with the release although git does not track them."""
    command: str
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """A management command run on a schedule: `manage.py *command` at `schedule` (systemd OnCalendar)."""
    name: str
    command: tuple[str, ...]
    schedule: str


# The points of a deploy where app.hooks run, in the order they come.
HOOK_POINTS = ("after_build", "after_migrate", "after_switch")


@dataclass(frozen=True)
class Hook:
    """A command run at a point of a deploy (app.hooks), in the release, bounded by `timeout` seconds. Its first
    word is `manage.py`, the name of a program in the release's virtualenv, or an absolute path."""
    command: tuple[str, ...]
    timeout: int = defaults.HOOK_TIMEOUT_S

    @property
    def text(self) -> str:
        return join(*self.command)


@dataclass(frozen=True)
class Hooks:
    """The inventory's app.hooks: the commands each point runs, in order."""
    after_build: tuple[Hook, ...] = ()
    after_migrate: tuple[Hook, ...] = ()
    after_switch: tuple[Hook, ...] = ()

    def at(self, point: str) -> tuple[Hook, ...]:
        return getattr(self, point)


@dataclass(frozen=True)
class Process:
    """A long-running process type beside the web server (a Celery worker, a scheduler): `command`, split like a
    shell would, runs in every live release as APP-NAME@RELEASE.service. A `singleton` never runs twice at once:
    at a switch the old one stops before the new one starts."""
    name: str
    command: tuple[str, ...]
    singleton: bool = False
    stop_timeout: int = defaults.PROCESS_STOP_TIMEOUT_S


@dataclass(frozen=True)
class App:
    name: str
    domains: tuple[str, ...] = ()
    wsgi_module: str = ""
    server: str = defaults.SERVER
    asgi_module: str = ""
    max_upload_mb: int = defaults.MAX_UPLOAD_MB
    source: Path = Path(".")
    requirements: str = defaults.REQUIREMENTS
    health_check: str = defaults.HEALTH_CHECK
    keep_releases: int = defaults.KEEP_RELEASES
    keep_failed: int = defaults.KEEP_FAILED
    keep_backups: int = defaults.KEEP_BACKUPS
    standby_minutes: int = defaults.STANDBY_MINUTES
    workers: int | None = None  # Gunicorn workers per web instance; None: sized on the server (tasks/sizing.py)
    settings_module: str = ""  # empty: the one manage.py names
    env: tuple[tuple[str, str], ...] = ()  # the app's own non-secret variables, in the inventory's order
    build: Build | None = None
    jobs: tuple[Job, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    processes: tuple[Process, ...] = ()

    @property
    def wsgi(self) -> str:
        return self.wsgi_module or f"{self.name}.wsgi"

    @property
    def asgi(self) -> str:
        return self.asgi_module or f"{self.name}.asgi"

    @property
    def module(self) -> str:
        """The module whose `application` Gunicorn loads: the ASGI or the WSGI one, as app.server says."""
        return self.asgi if self.server == "asgi" else self.wsgi


@dataclass(frozen=True)
class Backups:
    """The scheduled daily database backup: when, and how many of its dumps are kept."""
    time: str = defaults.BACKUP_TIME
    keep_daily: int = defaults.KEEP_DAILY
    keep_weekly: int = defaults.KEEP_WEEKLY


@dataclass(frozen=True)
class Database:
    """`database`: an existing PostgreSQL (a managed one, say) the app uses instead of one on its server."""
    url: str                        # postgres://user@host[:port]/name[?options], never with a password
    ca_bundle: Path | None = None   # a PEM file on this machine; None: the server's system CA store
    password_env: str = defaults.DATABASE_PASSWORD_ENV


@dataclass(frozen=True)
class Media:
    """`media`: an existing S3-compatible store holding the app's uploads, the same for every web server."""
    endpoint: str                   # http[s]://host[:port], path-style: the bucket goes in the path
    bucket: str
    region: str = defaults.MEDIA_REGION
    access_key_env: str = defaults.MEDIA_ACCESS_KEY_ENV
    secret_key_env: str = defaults.MEDIA_SECRET_KEY_ENV


@dataclass(frozen=True)
class Inventory:
    app: App
    hosts: tuple[Host, ...]
    acme: Acme = field(default_factory=Acme)
    proxy: Proxy | None = None
    deploy_user: str = defaults.DEPLOY_USER
    ssh_keys: tuple[str, ...] = ()
    known_hosts: Path | None = None  # None: the user's ~/.ssh/known_hosts
    source: str = "(defaults)"
    backups: Backups = field(default_factory=Backups)
    services: tuple[str, ...] = ()  # services the app uses that provision sets up on the server (SERVICES)
    database: Database | None = None  # None: PostgreSQL on the server itself, peer authentication
    deploy_batch: int = defaults.DEPLOY_BATCH  # web servers a deploy switches at once
    media: Media | None = None  # None: uploads on each server's disk (shared/media)

    @property
    def proxy_environment(self) -> dict[str, str]:
        return self.proxy.environment() if self.proxy else {}

    @property
    def tls(self) -> bool:
        """TLS needs names: a certificate from an ACME CA is issued for domains, not for addresses."""
        return bool(self.app.domains)

    # --- roles: which host does what (README, "Several servers") ---

    @property
    def several_servers(self) -> bool:
        """Whether several hosts share the work by roles (a single server holds them all, roles or not)."""
        return len(self.hosts) > 1

    def with_role(self, role: str) -> tuple[Host, ...]:
        """The hosts that hold `role`, in the inventory's order. A single server holds web, worker and db; its
        db role is someone else's when database.url names the database."""
        if role == "db" and self.database is not None:
            return ()
        return tuple(host for host in self.hosts if host.has(role))

    @property
    def app_hosts(self) -> tuple[Host, ...]:
        """The hosts that run the app's code (web or worker): they get releases, and connect to the database."""
        return tuple(host for host in self.hosts if host.has("web") or host.has("worker"))

    @property
    def db_host(self) -> Host | None:
        """The host PostgreSQL runs on; None with database.url."""
        hosts = self.with_role("db")
        return hosts[0] if hosts else None

    @property
    def lb_host(self) -> Host | None:
        """The load balancer in front of the web hosts, if the layout has one."""
        hosts = self.with_role("lb")
        return hosts[0] if hosts else None

    def lb_in_front_of(self, host: Host) -> Host | None:
        """The load balancer that passes the site's requests to `host`: a web host's, when the layout has one."""
        return self.lb_host if self.lb_host and host.has("web") else None

    def fronts_site(self, host: Host) -> bool:
        """Whether visitors reach the site at `host`'s nginx: the load balancer's, else each web host's. It holds
        the certificate and the maintenance flag."""
        return host.has("lb") if self.lb_host else host.has("web")

    def terminates_tls(self, host: Host) -> bool:
        """Whether `host`'s own nginx holds the certificate."""
        return self.tls and self.fronts_site(host)

    def roles_of(self, host: Host) -> tuple[str, ...]:
        """What `host` does here, in defaults.ROLES' order."""
        return tuple(role for role in defaults.ROLES if host in self.with_role(role))

    @property
    def jobs_host(self) -> Host | None:
        """The one app host that runs the scheduled jobs: on every server, a daily job would run once each."""
        return (self.with_role("worker") or self.with_role("web") or (None,))[0]

    @property
    def backup_host(self) -> Host | None:
        """The one server of several that takes the daily backup and `fab backup`'s dumps: the db host; with
        database.url, the jobs host (each app host would dump the same database)."""
        return self.db_host or self.jobs_host

    def seen_from(self, host: Host) -> "Inventory":
        """The inventory as `host` runs it: the process types only on worker hosts, the jobs only on the jobs
        host. A single server runs everything: it gets the inventory as it is."""
        if not self.several_servers:
            return self
        app = replace(self.app, processes=self.app.processes if host.has("worker") else (),
                      jobs=self.app.jobs if host.address == self.jobs_host.address else ())
        return replace(self, app=app)


# --- checks: each returns an error text (what is wrong and how to fix it) or None -------------------------

# Every value below ends up in a shell command, a config file or a URL on the server, so every pattern must
# match the whole value: re.fullmatch, never re.match (whose `$` also matches before a trailing newline).
# Character classes are spelled out in ASCII: \w, \d and \s would let Unicode look-alikes through.
_UNIX_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# At most 26: the build user is APP_build, and Unix user names end at 32 characters.
_APP_NAME = re.compile(r"[a-z][a-z0-9_]{0,25}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*")
_PYTHON_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PCT = r"%[0-9A-Fa-f]{2}"
# A URL's host: a name, an IPv4 address (a name-shaped string, checked below) or [an IPv6 address].
_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?:(?P<userinfo>(?:[A-Za-z0-9._~+-]|" + _PCT + r")+"
                  r"(?::(?:[A-Za-z0-9._~+-]|" + _PCT + r")*)?)@)?"
                  r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
                  r"(?P<path>/(?:[A-Za-z0-9._~/?=&+,:@-]|" + _PCT + r")*)?")
# A URL path and query: unreserved characters, percent-encodings and / ? = & - . _ ~ % + , : @; nothing the
# shell, nginx or curl would read as syntax ($ ` ' " ; | < > \, spaces, line breaks).
_URL_PATH = re.compile(r"/(?:[A-Za-z0-9._~/?=&+,:@-]|" + _PCT + r")*")
_URL_PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/?=&+,:@%")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_PROJECT_PATH = re.compile(r"[A-Za-z0-9._+@/-]+")
_PROJECT_PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+@/-")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_RESERVED_NAMES = {"root", "postgres", "www-data", "nobody", "daemon", "sys", "bin", "sshd", "admin"}


def _control_problem(value: str) -> str | None:
    """Line breaks, tabs and other invisible characters have no place in any inventory value."""
    if problem := control_problem(value):
        return (f"{problem}; write it on one line, without special characters (check for a stray quote or a "
                "paste from a web page)")
    return None


def _first_bad(value: str, allowed: set[str]) -> str:
    """How to tell the reader which character is wrong: the first one outside `allowed`."""
    for i, char in enumerate(value):
        if char not in allowed:
            return f" ({char!r} at position {i + 1} is not allowed)"
    return ""


def _hostname_problem(value: str, need_dot: bool) -> str | None:
    if not value.isascii():
        return ("plain ASCII letters, digits and hyphens (write an international name in its xn-- form), "
                "e.g. www.example.com")
    name = value.rstrip(".").lower()
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return "letters, digits and hyphens in dot-separated labels, e.g. www.example.com"
    if need_dot and "." not in name:
        return "a full domain name with a dot, e.g. example.com"
    return None


def check_domain(value: str) -> str | None:
    if value.startswith("*."):
        return ("is a wildcard; certificates here are obtained by HTTP-01 validation, which cannot issue "
                "wildcards. List each name instead, e.g. www.example.com")
    if "%" not in value and _is_ip(value):
        return "is an address; list the domain names that point at the server, e.g. example.com"
    problem = _hostname_problem(value, need_dot=True)
    return f"is not a valid domain name: use {problem}" if problem else None


def ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address for pg_hba.conf and the firewall, or ValueError: a plain IP address, no IPv6 scope (%eth0)."""
    if "%" in value:
        raise ValueError(f"{value!r} has a scope: not an address other servers reach")
    return ipaddress.ip_address(value)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def check_address(value: str) -> str | None:
    # ipaddress accepts an IPv6 scope (fe80::1%anything): not a server address, and not safe text.
    if "%" not in value and _is_ip(value):
        return None
    problem = _hostname_problem(value, need_dot=False)
    return f"is neither an IP address nor a host name: use e.g. 203.0.113.10 or {problem}" if problem else None


def check_private_address(value: str) -> str | None:
    # PostgreSQL's pg_hba.conf and the firewall take addresses, not names.
    if "%" not in value and _is_ip(value):
        return None
    return "is not an IP address: give the address the other servers reach this one at, e.g. 10.0.0.11"


def check_role(value: str) -> str | None:
    if value in defaults.ROLES:
        return None
    return f"is not a role: use {', '.join(defaults.ROLES)}"


def check_app_name(value: str) -> str | None:
    if not _APP_NAME.fullmatch(value):
        return ("is not a usable app name: it becomes a Unix user, a database and a service name, so use "
                "lower-case letters, digits and underscores, starting with a letter (at most 26), e.g. mysite")
    if value in _RESERVED_NAMES:
        return f"is a system account's name; choose another, e.g. {value}_app"
    return None


def check_unix_user(value: str) -> str | None:
    if _UNIX_NAME.fullmatch(value):
        return None
    return ("is not a valid Unix user name: lower-case letters, digits, _ and -, starting with a letter "
            "(at most 32), e.g. deploy")


def check_deploy_user(value: str) -> str | None:
    if value == "root":
        return "cannot be root: root login is switched off after provisioning, so it is not the deploy user"
    return check_unix_user(value)


def check_email(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    if (at and len(value) <= 254 and len(local) <= 64 and _EMAIL_LOCAL.fullmatch(local)
            and not _hostname_problem(domain, need_dot=True)):
        return None
    return ("is not an e-mail address: letters, digits and . _ + - before the @, a domain name after it, "
            "nothing else (no spaces, quotes or line breaks), e.g. admin@example.com")


def _url_problem(value: str, schemes: tuple[str, ...], with_path: bool, with_userinfo: bool) -> str | None:
    """What is wrong with a URL, or None; `schemes`, and whether a path and a user:password may be there."""
    if problem := _control_problem(value):
        return problem
    match = _URL.fullmatch(value)
    if not match:
        if bad := _first_bad(value, _URL_PATH_CHARS | set("[]")):
            return f"has a character a URL here may not have (no spaces, quotes, $, backticks or backslashes){bad}"
        return "is not a URL of the form scheme://host[:port]"
    if match["scheme"] not in schemes:
        return f"must start with {' or '.join(s + '://' for s in schemes)}"
    if match["userinfo"] and not with_userinfo:
        return "must not contain a user name or password"
    if match["path"] and not with_path and match["path"] != "/":
        return "must not have a path: only scheme, host and port"
    host = match["host"]
    if host.startswith("["):
        if not _is_ip(host[1:-1]) or ipaddress.ip_address(host[1:-1]).version != 6:
            return f"has {host}, which is not an IPv6 address"
    elif not _is_ip(host) and (problem := _hostname_problem(host, need_dot=False)):
        return f"has the host {host!r}, which is not a host name or address: use {problem}"
    if match["port"] and not 1 <= int(match["port"]) <= 65535:
        return f"has the port {match['port']}: a port is between 1 and 65535"
    return None


def check_https_url(value: str) -> str | None:
    problem = _url_problem(value, ("https",), with_path=True, with_userinfo=False)
    return f"{problem}; use an https:// URL, e.g. {defaults.ACME_DIRECTORY}" if problem else None


def check_media_endpoint(value: str) -> str | None:
    problem = _url_problem(value, ("http", "https"), with_path=False, with_userinfo=False)
    return (f"{problem}; use the store's S3 endpoint, e.g. https://s3.eu-central-1.amazonaws.com or "
            "http://10.0.0.5:8333 on a private network (the bucket is a key of its own)") if problem else None


def check_bucket(value: str) -> str | None:
    """S3's bucket naming rules: 3 to 63 lowercase letters, digits, . and -, starting and ending with one."""
    if _BUCKET.fullmatch(value) and ".." not in value and not _is_ip(value):
        return None
    return ("is not a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, beginning and ending "
            "with a letter or digit, e.g. mysite-media")


def check_region(value: str) -> str | None:
    return None if _REGION.fullmatch(value) else "is not a region name: lowercase letters, digits and -, e.g. eu-central-1"


def check_proxy_url(value: str) -> str | None:
    problem = _url_problem(value, ("http", "https"), with_path=False, with_userinfo=True)
    return (f"{problem}; use http://[user:password@]host[:port], e.g. http://proxy.internal:3128 "
            "(percent-encode special characters in a password, e.g. %40 for @)") if problem else None


def check_no_proxy(value: str) -> str | None:
    """A host name, a .domain suffix, an address or a network (CIDR): what apt, pip and certbot understand."""
    if "%" not in value and "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
            return None
        except ValueError:
            pass
    elif "%" not in value and _is_ip(value):
        return None
    elif not _hostname_problem(value[1:] if value.startswith(".") else value, need_dot=False):
        return None
    return ("is not a host name, a .domain suffix, an address or a network: use e.g. internal.example.com, "
            ".example.com, 10.0.0.5 or 10.0.0.0/8, one per list item")


# libpq's sslmode values, and the query options gangway sets itself or that would put a secret in the file.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_DATABASE_OPTION = re.compile(r"[a-z_]{1,40}=(?:[A-Za-z0-9._~,:/+-]|" + _PCT + r")*")
_OWN_OPTIONS = {"password": "password_env (the password never goes into the inventory)",
                "passfile": "password_env (gangway writes the passfile on the server)",
                "sslrootcert": "ca_bundle (a PEM file next to the inventory)"}


def check_database_url(value: str) -> str | None:
    """postgres[ql]://USER@HOST[:PORT]/NAME[?OPTION=VALUE&...]: a user, a host and a database, no password."""
    problem = _url_problem(value, ("postgres", "postgresql"), with_path=True, with_userinfo=True)
    match = None if problem else _URL.fullmatch(value)
    example = "e.g. postgres://mysite@db.example.com:5432/mysite?sslmode=verify-full"
    if problem:
        return f"{problem}; {example}"
    if not match["userinfo"]:
        return f"names no user: put it before the host, {example}"
    if ":" in match["userinfo"]:
        return ("holds a password: the inventory is committed to git, so remove it from the URL and give it in "
                f"the environment variable named by database.password_env (default {defaults.DATABASE_PASSWORD_ENV}) "
                "when you run `fab provision`")
    path, _, query = (match["path"] or "").partition("?")
    if not path[1:] or "/" in path[1:]:
        return f"names no database: put its name after the host, {example}"
    for option in query.split("&") if query else ():
        name, _, setting = option.partition("=")
        if not _DATABASE_OPTION.fullmatch(option):
            return f"has the option {option!r}, which is not NAME=VALUE (letters and _ before the =); {example}"
        if name in _OWN_OPTIONS:
            return f"sets {name}: leave it out and use database.{_OWN_OPTIONS[name]}"
        if name == "sslmode" and setting not in SSLMODES:
            return f"has sslmode={setting}: use one of {', '.join(SSLMODES)}"
    return None


def database_options(url: str) -> dict[str, str]:
    """The query options of a checked database URL."""
    query = url.partition("?")[2]
    return dict(option.partition("=")[::2] for option in query.split("&")) if query else {}


def check_port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number between 1 and 65535"


def check_python_module(value: str) -> str | None:
    if _PYTHON_DOTTED.fullmatch(value):
        return None
    return "must be a dotted Python module path (letters, digits and _ between dots), e.g. mysite.wsgi"


def check_server(value: str) -> str | None:
    if value in defaults.SERVERS:
        return None
    return ("is not a server kind gangway runs: use wsgi (Django's WSGI application, the default) or asgi "
            "(its ASGI application, for async views and websockets, with Uvicorn's workers)")


def check_public_key(value: str) -> str | None:
    example = "e.g. 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... you@laptop' (the one line of your .pub file)"
    if problem := _control_problem(value):
        return f"{problem}; one key per list item, {example}"
    kind, _, rest = value.strip().partition(" ")
    blob, _, comment = rest.strip().partition(" ")
    if kind not in _KEY_TYPES:
        return (f"is not an OpenSSH public key line: it must start with the key type ({', '.join(_KEY_TYPES)}), "
                f"with no options before it; {example}")
    try:
        data = base64.b64decode(blob, validate=True)
    except ValueError:
        data = b""
    # The blob starts with its own type, length-prefixed: a copy-paste cut short or mixed up shows here.
    if data[4:4 + len(kind)] != kind.encode() or int.from_bytes(data[:4], "big") != len(kind):
        return f"has a key type and a key that do not belong together (is it cut short?); {example}"
    return None


def check_positive(value: int) -> str | None:
    return None if value > 0 else "must be a positive number"


def check_not_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def check_at_least_two(value: int) -> str | None:
    return None if value >= 2 else "must be at least 2: the live release and the previous one are always kept"


def check_workers(value: int) -> str | None:
    if 1 <= value <= defaults.MOST_WORKERS:
        return None
    return (f"must be from 1 to {defaults.MOST_WORKERS} Gunicorn workers per web instance (each instance may run "
            f"{defaults.GUNICORN_TASKS_MAX} tasks, threads included); or remove app.workers to let gangway size "
            "them from the server's cores and memory")


def check_time_of_day(value: str) -> str | None:
    match = re.fullmatch(r"([0-9]{2}):([0-9]{2})", value)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        return "is not a time of day: write HH:MM in 24-hour server time, e.g. \"03:15\" (in quotes)"
    return None


def check_url_path(value: str) -> str | None:
    if _URL_PATH.fullmatch(value) and len(value) <= 2000:
        return None
    if problem := _control_problem(value):
        return f"{problem}: use a URL path starting with /, e.g. /healthz/"
    return ("must be a URL path starting with /, e.g. /healthz/ or /healthz/?full=1: letters, digits and "
            "- . _ ~ / ? = & + , : @ only, percent-encode anything else (e.g. %20 for a space)"
            + _first_bad(value, _URL_PATH_CHARS))


# Names gangway sets itself: the inventory cannot override them (see README, "What the app gets").
MANAGED_VARIABLES = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DJANGO_DB_NAME", "DATABASE_URL",
                     "DJANGO_MEDIA_ROOT", "DJANGO_STATIC_ROOT", "DJANGO_HTTPS", "DJANGO_SETTINGS_MODULE",
                     "GANGWAY_RELEASE", "REDIS_URL", "CELERY_BROKER_URL", "PGPASSFILE", "AWS_STORAGE_BUCKET_NAME",
                     "AWS_S3_ENDPOINT_URL", "AWS_S3_REGION_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# What the inventory's `services` may name: each is set up by `fab provision` (tasks/provisioning/).
SERVICES = ("redis",)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


# Names that change how the system runs the app rather than what the app reads, refused in app.env and
# `fab config`: (test, why). systemd sets USER, LOGNAME, SHELL and HOME from User=, and the others itself.
_SYSTEM_NAMES = (
    (lambda n: n == "PATH", "decides which programs the app and every management command run"),
    (lambda n: n.startswith("LD_"), "changes which libraries every program loads (LD_PRELOAD injects code into "
                                    "them)"),
    (lambda n: n.startswith("PYTHON"), "changes how Python itself starts (PYTHONPATH and PYTHONSTARTUP make it "
                                       "import or run other code)"),
    (lambda n: n == "HOME", "is the app user's home, which systemd sets: pointed elsewhere (the media directory, "
                            "say), programs write their dot-files there"),
    (lambda n: n in ("USER", "LOGNAME", "SHELL", "INVOCATION_ID", "JOURNAL_STREAM", "RUNTIME_DIRECTORY",
                     "NOTIFY_SOCKET", "MAINPID", "MANAGERPID", "SYSTEMD_EXEC_PID", "LISTEN_FDS", "LISTEN_PID",
                     "LISTEN_FDNAMES"),
     "is set by systemd for the app's service itself"),
)


def unit_variables() -> frozenset[str]:
    """The names the app's systemd units set with Environment= (templates/systemd/), and those
    every management command's sandbox sets (release_commands.SANDBOX_ENV)."""
    from .commands.release import SANDBOX_ENV
    from .commands.render import TEMPLATES
    names = set(SANDBOX_ENV)
    lines = [line for unit in ("app@.service.j2", "job.service.j2")
             for line in (TEMPLATES / "systemd" / unit).read_text().splitlines()]
    for line in lines:
        if line.startswith("Environment="):
            names.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", line[len("Environment="):]))
    return frozenset(names)


def check_env_name(value: str) -> str | None:
    if not ENV_NAME.fullmatch(value):
        return ("is not a usable environment variable name: letters, digits and _, not starting with a digit, "
                "e.g. SENTRY_ENVIRONMENT")
    fix = f"choose a name of your own, e.g. MYAPP_{value.lstrip('_')}, and read that in your settings"
    if value in MANAGED_VARIABLES:
        return f"is set by gangway itself (see the README's environment contract): {fix}"
    if value in unit_variables():
        return f"is set by the app's systemd unit itself (templates/systemd/): {fix}"
    for test, why in _SYSTEM_NAMES:
        if test(value):
            return f"{why}; it is not the app's own setting and is refused: {fix}"
    return None


def check_env_value(value: str) -> str | None:
    """A value systemd reads from the env file between single quotes: one line, no quote, no backslash."""
    if problem := _control_problem(value):
        return problem
    if bad := [c for c in "'\\" if c in value]:
        return (f"contains {bad[0]!r}, which the environment file cannot hold; remove it (secrets belong in "
                "`fab config --set`, not in the inventory)")
    return None


def check_service(value: str) -> str | None:
    if value in SERVICES:
        return None
    close = difflib.get_close_matches(value, SERVICES, n=1)
    return (f"is not a service gangway sets up; known: {', '.join(SERVICES)}"
            + (f" (did you mean {close[0]!r}?)" if close else ""))


def check_local_path(value: str) -> str | None:
    """A path on this machine: any name a file may have, but on one line."""
    if not value:
        return "is empty: give a path"
    return _control_problem(value)


def check_relative_path(value: str) -> str | None:
    if problem := _control_problem(value):
        return problem
    if not value or value.startswith("/") or ".." in value.split("/"):
        return "must be a path inside the project, e.g. requirements.txt"
    # It is used in commands on the server (quoted there too): a plain file name needs nothing else.
    if not _PROJECT_PATH.fullmatch(value):
        return ("must be a plain relative path: letters, digits and . _ - + @ / only, e.g. requirements/prod.txt"
                + _first_bad(value, _PROJECT_PATH_CHARS))
    return None


_JOB_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_COMMAND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_FIELD = r"(?:\*|[0-9]{1,4}(?:,[0-9]{1,4})*)(?:/[0-9]{1,2})?"
# systemd's OnCalendar, in the forms people write: a shorthand, or [weekdays] [Y-M-D] H:M[:S], each field a
# number, a list of numbers or *, with an optional /step. Nothing else reaches the timer file.
_SHORTHANDS = ("minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "semiannually", "yearly",
               "annually")
_CALENDAR = re.compile(rf"(?:(?P<days>{_WEEKDAY}(?:(?:,|\.\.){_WEEKDAY})*) )?"
                       rf"(?:(?P<date>{_FIELD}-{_FIELD}-{_FIELD}) )?(?P<time>{_FIELD}:{_FIELD}(?::{_FIELD})?)")
_TIME_LIMITS = (23, 59, 59)


def check_job_name(value: str) -> str | None:
    if _JOB_NAME.fullmatch(value):
        return None
    return ("is not a usable job name: it becomes part of a systemd unit name (APP-job-NAME.timer), so use "
            "lower-case letters, digits, - and _, starting with a letter (at most 32), e.g. clearsessions")


def check_schedule(value: str) -> str | None:
    """A systemd OnCalendar expression in a strict form: a shorthand (daily) or [weekdays] [date] time."""
    if value in _SHORTHANDS:
        return None
    match = _CALENDAR.fullmatch(value)
    if match and all(int(n) <= limit for part, limit in zip(match["time"].split(":"), _TIME_LIMITS)
                     for n in part.split("/")[0].split(",") if n != "*"):
        return None
    return ("is not a schedule gangway accepts: use daily, hourly, weekly, monthly, or a time of day as systemd "
            "writes it, e.g. '*-*-* 03:00:00' (every day at 03:00), 'Mon *-*-* 04:30' or '*-*-* *:0/15' "
            "(every 15 minutes); `systemd-analyze calendar 'EXPRESSION'` shows when one fires")


def job_command(value: str) -> tuple[str, ...]:
    """The manage.py arguments of a job's command, split like a shell would; raises ValueError."""
    if problem := _control_problem(value):
        raise ValueError(problem)
    try:
        words = tuple(shlex.split(value))
    except ValueError as error:
        raise ValueError(f"cannot be split into words ({error}): close the quote") from None
    if not words:
        raise ValueError("is empty: give a management command, e.g. clearsessions")
    if not _COMMAND_NAME.fullmatch(words[0]):
        raise ValueError("must start with the management command's name (what follows `manage.py`), "
                         "e.g. clearsessions or 'send_reminders --days 3'")
    return words


# A program in the release's virtualenv (.venv/bin/NAME), or one word of an absolute path.
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_ABSOLUTE_PATH = re.compile(r"(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)+")
_PROCESS_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# The first word of a process's command: a program of the release's venv, manage.py, or a path.
_PROGRAM = re.compile(r"[A-Za-z0-9._+-]+")
_PROGRAM_PATH = re.compile(r"[A-Za-z0-9._+/-]+")


def _command_words(value: str, example: str) -> tuple[str, ...]:
    """A command line split into words like a shell would (no shell ever runs it: `$(...)`, `;` and `*` stay
    plain characters of its arguments); raises ValueError naming EXAMPLE when there is nothing to run."""
    if problem := _control_problem(value):
        raise ValueError(problem)
    try:
        words = tuple(shlex.split(value))
    except ValueError as error:
        raise ValueError(f"cannot be split into words ({error}): close the quote") from None
    if not words:
        raise ValueError(f"is empty: give a command, e.g. '{example}'")
    return words


def hook_command(value: str) -> tuple[str, ...]:
    """The words of a release hook's command line; raises ValueError."""
    words = _command_words(value, "manage.py compilemessages")
    first = words[0]
    if first != "manage.py" and not _PROGRAM_NAME.fullmatch(first) and not _ABSOLUTE_PATH.fullmatch(first):
        raise ValueError("must start with manage.py (the release's management commands), the name of a program "
                         "in the release's virtualenv (e.g. python, celery), or an absolute path (e.g. /bin/sh): it "
                         "runs in the release's directory, so a script of the project runs as e.g. "
                         "'python scripts/warm.py' or '/bin/sh scripts/warm.sh'")
    return words


def check_process_name(value: str) -> str | None:
    from .layout import OWN_UNIT_WORDS
    if value in OWN_UNIT_WORDS:
        return (f"is a name gangway's own units use (APP-{value}...); call it something else, e.g. worker, beat, "
                f"{value}_worker")
    if _PROCESS_NAME.fullmatch(value):
        return None
    return ("is not a usable process name: it becomes part of a systemd unit name (APP-NAME@RELEASE.service), so "
            "use lower-case letters, digits and _, starting with a letter (at most 32), e.g. worker or beat")


def process_command(value: str) -> tuple[str, ...]:
    """A process's command in words; raises ValueError. The first word is a program of the release's venv
    (celery, rq, python), manage.py, a path inside the release (bin/worker) or an absolute path."""
    words = _command_words(value, "celery -A mysite worker -l info")
    program = words[0]
    if "/" not in program and not _PROGRAM.fullmatch(program) or "/" in program and (
            not _PROGRAM_PATH.fullmatch(program) or ".." in program.split("/") or program.endswith("/")):
        raise ValueError(f"starts with {program!r}, which is not a program gangway can run: give a program of the "
                         "release's Python environment (celery, rq, python), manage.py, a path inside the release "
                         "(bin/worker) or an absolute path, in letters, digits and . _ + - /")
    return words


def is_celery_beat(command: tuple[str, ...]) -> bool:
    """`celery ... beat ...`: a scheduler, which must never run twice (each would send every periodic task)."""
    return command[0].rsplit("/", 1)[-1] == "celery" and "beat" in command[1:]


def _problem_of(parse: Callable[[str], Any]) -> Callable[[str], str | None]:
    """The check of a value a parser reads: the problem its ValueError names, or None."""
    def check(value: str) -> str | None:
        try:
            parse(value)
        except ValueError as error:
            return str(error)
        return None
    return check


check_job_command = _problem_of(job_command)
check_hook_command = _problem_of(hook_command)
check_process_command = _problem_of(process_command)


# --- the schema ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    """One key of a mapping: its type, whether it must be there, its check, and a hint for the reader."""
    kind: type | tuple[type, ...]
    hint: str
    required: bool = False
    check: Callable[[Any], str | None] | None = None
    each: Callable[[Any], str | None] | None = None  # for lists: the check applied to every item
    item_kind: type | None = None


HOST_KEYS = {
    "address": Key(str, "the server's IP address or host name", required=True, check=check_address),
    "user": Key(str, "the SSH user for the first connection (root, or a user with sudo)", check=check_unix_user),
    "port": Key(int, "the SSH port", check=check_port),
    "key": Key(str, "path of your SSH private key, e.g. ~/.ssh/id_ed25519", check=check_local_path),
    "roles": Key(list, f"what this server does with several servers: some of {', '.join(defaults.ROLES)}",
                 each=check_role, item_kind=str),
    "private_address": Key(str, "the IP address the other servers reach this one at, on a private network",
                           check=check_private_address),
}
APP_KEYS = {
    "name": Key(str, "the app's short name, e.g. mysite", required=True, check=check_app_name),
    "domains": Key(list, "the domain names the site answers on, e.g. [example.com, www.example.com]",
                   each=check_domain, item_kind=str),
    "wsgi_module": Key(str, "the Django project's WSGI module, e.g. mysite.wsgi", check=check_python_module),
    "server": Key(str, "how Gunicorn serves the app: wsgi (the default) or asgi (async views, websockets)",
                  check=check_server),
    "asgi_module": Key(str, "the Django project's ASGI module, used with server: asgi, e.g. mysite.asgi",
                       check=check_python_module),
    "max_upload_mb": Key(int, "the largest request body nginx accepts, in MB", check=check_positive),
    "source": Key(str, "the Django project's directory (with manage.py), relative to this file",
                  check=check_local_path),
    "requirements": Key(str, "the requirements file, relative to the project", check=check_relative_path),
    "health_check": Key(str, "the path a new release must answer before it gets traffic, e.g. /healthz/",
                        check=check_url_path),
    "keep_releases": Key(int, "how many good releases to keep on the server", check=check_at_least_two),
    "keep_failed": Key(int, "how many failed releases to keep aside for inspection", check=check_positive),
    "keep_backups": Key(int, "how many database dumps (taken before migrations) to keep", check=check_positive),
    "standby_minutes": Key(int, "how long the previous release keeps running after a switch, for an instant "
                                "rollback (0: stop it at once)", check=check_not_negative),
    "workers": Key(int, "Gunicorn workers per web instance, e.g. 4 (default: as many as the server's cores and "
                        "memory allow, see the README)", check=check_workers),
    "settings_module": Key(str, "the settings module production uses, e.g. mysite.settings_production "
                                "(default: the one manage.py names)", check=check_python_module),
    "env": Key(dict, "the app's own non-secret environment variables, e.g. {SENTRY_ENVIRONMENT: production}"),
    "build": Key(dict, "a local build step before packing: {command: 'npm ci && npm run build', "
                       "outputs: [static/dist]}"),
    "jobs": Key(list, "management commands run on a schedule: [{name: clearsessions, command: clearsessions, "
                      "schedule: daily}]", item_kind=dict),
    "hooks": Key(dict, "commands run at points of a deploy: {after_build: ['manage.py compilemessages'], "
                       "after_migrate: [...], after_switch: [...]}"),
    "processes": Key(dict, "long-running processes beside the web server: {worker: 'celery -A mysite worker', "
                           "beat: 'celery -A mysite beat'}, or NAME: {command: ..., singleton: true, stop_timeout: 60}"),
}
HOOK_KEYS = {
    "command": Key(str, "the command line, e.g. 'manage.py compilemessages'", required=True,
                   check=check_hook_command),
    "timeout": Key(int, f"seconds it may run before it is stopped and fails the deploy (default "
                        f"{defaults.HOOK_TIMEOUT_S})", check=check_positive),
}
JOB_KEYS = {
    "name": Key(str, "a short name for the job, e.g. clearsessions", required=True, check=check_job_name),
    "command": Key(str, "what follows `manage.py`, e.g. clearsessions or 'send_reminders --days 3'",
                   required=True, check=check_job_command),
    "schedule": Key(str, "when it runs: daily, hourly, weekly, or e.g. '*-*-* 03:00:00'", required=True,
                    check=check_schedule),
}
PROCESS_KEYS = {
    "command": Key(str, "the command, e.g. 'celery -A mysite worker -l info' or 'manage.py db_worker'",
                   required=True, check=check_process_command),
    "singleton": Key(bool, "true: never two at once, even during a switch (default: true for celery beat)"),
    "stop_timeout": Key(int, f"seconds a stopping process gets to finish its task before it is killed "
                             f"(default {defaults.PROCESS_STOP_TIMEOUT_S})", check=check_positive),
}
BUILD_KEYS = {
    "command": Key(str, "the shell command run in the project directory on this machine before packing, "
                        "e.g. npm ci && npx gulp build", required=True, check=check_local_path),
    "outputs": Key(list, "the paths (relative to the project) the command writes that ship with the release, "
                         "e.g. [static/dist]", required=True, each=check_relative_path, item_kind=str),
}
ACME_KEYS = {
    "email": Key(str, "the e-mail address for the ACME account (expiry notices)", check=check_email),
    "directory": Key(str, "the ACME directory URL (Let's Encrypt by default)", check=check_https_url),
    "ca_bundle": Key(str, "a PEM file the ACME client trusts for a private or test CA", check=check_local_path),
}
PROXY_KEYS = {
    "url": Key(str, "the outbound HTTP proxy, e.g. http://proxy.internal:3128", required=True,
               check=check_proxy_url),
    "no_proxy": Key(list, "hosts reached directly, not through the proxy", each=check_no_proxy, item_kind=str),
}
BACKUP_KEYS = {
    "time": Key(str, 'when the daily backup runs, HH:MM server time, in quotes, e.g. "03:15"',
                check=check_time_of_day),
    "keep_daily": Key(int, "how many days' scheduled backups to keep (the newest of each day)", check=check_positive),
    "keep_weekly": Key(int, "how many weeks' scheduled backups to keep besides (the newest of each week)",
                       check=check_not_negative),
}
DEPLOY_KEYS = {
    "batch": Key(int, "how many web servers a deploy switches at once (default 1: one after another)",
                 check=check_positive),
}
DATABASE_KEYS = {
    "url": Key(str, "the PostgreSQL to use, without a password, e.g. "
                    "postgres://mysite@db.example.com:5432/mysite?sslmode=verify-full", required=True,
               check=check_database_url),
    "ca_bundle": Key(str, "a PEM file of the CA that signed the database's certificate, relative to this file "
                          "(default: the server's system CA store)", check=check_local_path),
    "password_env": Key(str, f"the variable of your environment `fab provision` reads the password from "
                             f"(default {defaults.DATABASE_PASSWORD_ENV})", check=check_env_name),
}
MEDIA_KEYS = {
    "endpoint": Key(str, "the store's S3 endpoint, e.g. https://s3.eu-central-1.amazonaws.com", required=True,
                    check=check_media_endpoint),
    "bucket": Key(str, "the bucket the uploads go into, which must exist, e.g. mysite-media", required=True,
                  check=check_bucket),
    "region": Key(str, f"the region requests are signed for (default {defaults.MEDIA_REGION})", check=check_region),
    "access_key_env": Key(str, f"the variable of your environment `fab provision` reads the access key id from "
                               f"(default {defaults.MEDIA_ACCESS_KEY_ENV})", check=check_env_name),
    "secret_key_env": Key(str, f"the variable of your environment `fab provision` reads the secret access key "
                               f"from (default {defaults.MEDIA_SECRET_KEY_ENV})", check=check_env_name),
}
TOP_KEYS = {
    "app": Key(dict, "the app: name, domains", required=True),
    "hosts": Key(list, "the servers: a list of {address, user, port, key}", item_kind=dict),
    "acme": Key(dict, "where TLS certificates come from: email, directory, ca_bundle"),
    "proxy": Key(dict, "an outbound HTTP proxy for servers that reach the internet only through one"),
    "deploy_user": Key(str, "the account you and fab log in as after provisioning", check=check_deploy_user),
    "ssh_keys": Key(list, "more public keys allowed to log in as the deploy user", each=check_public_key,
                    item_kind=str),
    "backups": Key(dict, "the scheduled daily database backup: {time: \"03:15\", keep_daily: 7, keep_weekly: 4}"),
    "deploy": Key(dict, "how a deploy moves several web servers: {batch: 1}"),
    "services": Key(list, "services the app uses, set up by `fab provision` on the server, e.g. [redis]",
                    each=check_service, item_kind=str),
    "database": Key(dict, "an existing PostgreSQL instead of one on the server: {url: postgres://USER@HOST/NAME, "
                          "ca_bundle: ..., password_env: ...}"),
    "media": Key(dict, "uploads in an existing S3-compatible store shared by every server: {endpoint: https://..., "
                       "bucket: ...}, the credentials from your environment"),
    "known_hosts": Key(str, "the file that holds these servers' SSH host keys instead of ~/.ssh/known_hosts, "
                            "relative to this file, e.g. production.known_hosts", check=check_local_path),
}

_TYPE_NAMES = {str: "a string", int: "a number", list: "a list", dict: "a mapping (key: value lines)",
               bool: "true or false"}


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, text: str) -> InventoryError:
        return InventoryError(f"{self.source}: {where}: {text}")

    def mapping(self, data: Any, keys: dict[str, Key], where: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where or "top level", f"must be {_TYPE_NAMES[dict]}, found {_kind(data)}")
        for name in data:
            if name not in keys:
                close = difflib.get_close_matches(str(name), keys, n=1)
                fix = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(keys)}"
                raise self.fail(_join(where, name), f"unknown key; {fix}")
        for name, key in keys.items():
            path = _join(where, name)
            if name not in data or data[name] is None:
                if key.required:
                    raise self.fail(path, f"is missing; add it: {key.hint}")
                continue
            self.value(data[name], key, path)
        return {k: v for k, v in data.items() if v is not None}

    def value(self, value: Any, key: Key, path: str) -> None:
        # bool is an int to Python; a number key must not take `true`, nor a true/false key a number.
        if isinstance(value, bool) != (key.kind is bool) or not isinstance(value, key.kind):
            raise self.fail(path, f"must be {_TYPE_NAMES[key.kind]} ({key.hint}), found {_kind(value)}")
        if key.check and (problem := key.check(value)):
            raise self.fail(path, f"{value!r} {problem}")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if key.item_kind and (isinstance(item, bool) or not isinstance(item, key.item_kind)):
                    raise self.fail(f"{path}[{i}]", f"must be {_TYPE_NAMES[key.item_kind]}, found {_kind(item)}")
                if key.each and (problem := key.each(item)):
                    raise self.fail(f"{path}[{i}]", f"{item!r} {problem}")


def _join(where: str, name: Any) -> str:
    # A key with a line break in it must not break the one-line message.
    name = name if isinstance(name, str) and name.isprintable() else repr(name)
    return f"{where}.{name}" if where else str(name)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    return f"{type(value).__name__} {value!r}" if isinstance(value, (int, float, str)) else type(value).__name__


def parse(data: Any, source: str, base: Path) -> Inventory:
    """Validate a loaded YAML document and build the Inventory; raises InventoryError naming key and fix.

    Only the keys the file sets are passed on: a key left out takes the dataclass's default (tasks/defaults.py).
    """
    checker = _Checker(source)
    top = checker.mapping(data, TOP_KEYS, "")
    app = checker.mapping(top["app"], APP_KEYS, "app")
    domains = [d.rstrip(".").lower() for d in app.get("domains", [])]
    for i, d in enumerate(domains):
        if d in domains[:i]:
            raise checker.fail(f"app.domains[{i}]", f"{d!r} is listed twice; remove one")
    hosts = []
    for i, raw in enumerate(top.get("hosts", [])):
        h = checker.mapping(raw, HOST_KEYS, f"hosts[{i}]")
        if "key" in h:
            h["key"] = _file(h["key"], base, checker, f"hosts[{i}].key", ". Fix the path, or create a key with "
                             "`ssh-keygen -t ed25519` and use ~/.ssh/id_ed25519")
        roles = h.get("roles", [])
        for j, role in enumerate(roles):
            if role in roles[:j]:
                raise checker.fail(f"hosts[{i}].roles[{j}]", f"{role!r} is listed twice; remove one")
        if "roles" in h and not roles:
            raise checker.fail(f"hosts[{i}].roles", f"is empty; give the server a role ({', '.join(defaults.ROLES)}),"
                               " or remove the key on a single server")
        hosts.append(Host(**{**h, "address": h["address"].lower(), "roles": tuple(roles)}))
    acme = checker.mapping(top.get("acme", {}), ACME_KEYS, "acme")
    if "ca_bundle" in acme:
        acme["ca_bundle"] = _file(acme["ca_bundle"], base, checker, "acme.ca_bundle", "; point it at the CA's "
                                  "PEM certificate, or remove the key to use public CAs")
    proxy = None
    if "proxy" in top:
        p = checker.mapping(top["proxy"], PROXY_KEYS, "proxy")
        proxy = Proxy(url=p["url"], no_proxy=tuple(p.get("no_proxy", ())))
    env = []
    for name, value in app.get("env", {}).items():
        if not isinstance(name, str) or (problem := check_env_name(name)):
            raise checker.fail(_join("app.env", name), f"{name!r} {problem or 'must be a name'}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise checker.fail(_join("app.env", name), f"must be a string or a number, found {_kind(value)}")
        if problem := check_env_value(str(value)):
            raise checker.fail(_join("app.env", name), f"{str(value)!r} {problem}")
        env.append((name, str(value)))
    build = None
    if "build" in app:
        b = checker.mapping(app["build"], BUILD_KEYS, "app.build")
        build = Build(command=b["command"], outputs=tuple(o.rstrip("/") for o in b["outputs"]))
    backups = checker.mapping(top.get("backups", {}), BACKUP_KEYS, "backups")
    jobs = []
    for i, raw in enumerate(app.get("jobs", [])):
        j = checker.mapping(raw, JOB_KEYS, f"app.jobs[{i}]")
        if j["name"] in [job.name for job in jobs]:
            raise checker.fail(f"app.jobs[{i}].name", f"{j['name']!r} is used twice; give each job its own name")
        jobs.append(Job(name=j["name"], command=job_command(j["command"]), schedule=j["schedule"]))
    services = top.get("services", [])
    for i, name in enumerate(services):
        if name in services[:i]:
            raise checker.fail(f"services[{i}]", f"{name!r} is listed twice; remove one")
    processes = [_process(checker, name, raw) for name, raw in app.get("processes", {}).items()]
    database = None
    if "database" in top:
        d = checker.mapping(top["database"], DATABASE_KEYS, "database")
        if "ca_bundle" in d:
            d["ca_bundle"] = _file(d["ca_bundle"], base, checker, "database.ca_bundle", "; point it at the PEM "
                                   "certificate of the CA that signed the database's, or remove the key to use the "
                                   "server's system CA store")
        database = Database(**d)
    media = None
    if "media" in top:
        m = checker.mapping(top["media"], MEDIA_KEYS, "media")
        media = Media(**{**m, "endpoint": m["endpoint"].rstrip("/")})
    deploy = checker.mapping(top.pop("deploy", {}), DEPLOY_KEYS, "deploy")
    if "batch" in deploy:
        top["deploy_batch"] = deploy["batch"]
    _check_roles(checker, hosts, database is not None, bool(processes))
    if services and len(hosts) > 1:
        raise checker.fail("services", f"{', '.join(services)} with several servers: each app server would run "
                           "its own, and a task queued on one would never reach a worker on another; not "
                           "supported yet: use a managed Redis by its URL in app.env, or one server")
    project = Path(app.get("source", ".")).expanduser()
    return Inventory(**{
        **top,
        "app": App(**{**app, "domains": tuple(domains), "env": tuple(env), "build": build, "jobs": tuple(jobs),
                      "hooks": _hooks(app.get("hooks", {}), checker),
                      "processes": tuple(processes),
                      "source": project if project.is_absolute() else (base / project).resolve()}),
        "hosts": tuple(hosts), "acme": Acme(**acme), "proxy": proxy, "backups": Backups(**backups),
        "ssh_keys": tuple(top.get("ssh_keys", ())), "source": source, "services": tuple(services),
        "known_hosts": _local(top["known_hosts"], base) if "known_hosts" in top else None, "database": database,
        "media": media,
    })


def _check_roles(checker: _Checker, hosts: list[Host], managed_database: bool, processes: bool) -> None:
    """A layout of several servers says who does what, once: web hosts, one database (unless database.url),
    at most one load balancer, and workers when the app has process types. A single server needs no roles."""
    if not any(host.roles for host in hosts):
        if len(hosts) > 1:
            raise checker.fail("hosts", f"{len(hosts)} servers and none has roles: say what each does, e.g. roles: "
                               "[web] on each web server and roles: [db] on the database's (README, \"Several "
                               "servers\"), or list one server")
        return
    for i, host in enumerate(hosts):
        if not host.roles:
            raise checker.fail(f"hosts[{i}]", f"{host.address} has no roles while other servers have: give it "
                               f"roles ({', '.join(defaults.ROLES)})")
        if "lb" in host.roles and "web" in host.roles:
            raise checker.fail(f"hosts[{i}].roles", "lb and web on one server: the load balancer's nginx and the "
                               "web server's would both answer ports 80 and 443; put the lb on a server of its own "
                               "(or with db), or drop lb and let the web server answer")
        if host.roles and not host.private_address and not _is_ip(host.address):
            raise checker.fail(f"hosts[{i}]", f"{host.address} is a name: with several servers each needs the IP "
                               "address the others reach it at (pg_hba.conf and the firewall take addresses): add "
                               "private_address: 10.0.0.11")
    peers = [host.peer_address for host in hosts]
    for i, address in enumerate(peers):
        if address in peers[:i]:
            raise checker.fail(f"hosts[{i}]", f"{address} is the address of hosts[{peers.index(address)}] too; "
                               "list each server once, with all its roles")
    holding = {role: [i for i, host in enumerate(hosts) if role in host.roles] for role in defaults.ROLES}
    if not holding["web"]:
        raise checker.fail("hosts", "no server has the web role: give one (or more) roles: [web]")
    if managed_database and holding["db"]:
        raise checker.fail(f"hosts[{holding['db'][0]}].roles", "db and database.url: the database is the one the "
                           "URL names; remove the db role, or remove database to run PostgreSQL on that server")
    if not managed_database and len(holding["db"]) != 1:
        raise checker.fail("hosts", ("no server has the db role: give one roles: [db], or name an existing "
                                     "PostgreSQL with database.url") if not holding["db"] else
                           f"{len(holding['db'])} servers have the db role: the app has one database; keep db on "
                           "one of them")
    if len(holding["lb"]) > 1:
        raise checker.fail("hosts", f"{len(holding['lb'])} servers have the lb role: one load balancer fronts the "
                           "web servers; keep lb on one of them")
    for i, host in enumerate(hosts):
        if "worker" in host.roles and "web" not in host.roles:
            raise checker.fail(f"hosts[{i}].roles", "worker without web: a server of its own for the workers is not "
                               "supported yet; give the worker role to a web server, e.g. roles: [web, worker]")
    if processes and len(holding["worker"]) > 1:
        raise checker.fail("hosts", f"{len(holding['worker'])} servers have the worker role: each would run every "
                           "process type, and a scheduler (celery beat) must run once; keep worker on one server")
    if processes and not holding["worker"]:
        raise checker.fail("hosts", "app.processes names process types but no server has the worker role: add "
                           "worker to the roles of the server(s) that should run them, e.g. roles: [web, worker]")


def _hooks(raw: dict, checker: _Checker) -> Hooks:
    """app.hooks: at each known point, a list of command lines or {command, timeout} mappings."""
    points = {}
    for point, entries in raw.items():
        where = _join("app.hooks", point)
        if point not in HOOK_POINTS:
            close = difflib.get_close_matches(str(point), HOOK_POINTS, n=1)
            raise checker.fail(where, "unknown hook point" + (f" (did you mean '{close[0]}'?)" if close else "")
                               + f"; the points are {', '.join(HOOK_POINTS)} (after the build, before Django's "
                                 "checks; after migrate, before the switch; after the switch)")
        if entries is None:
            continue
        if isinstance(entries, str):
            entries = [entries]  # one command needs no list
        if not isinstance(entries, list):
            raise checker.fail(where, f"must be a list of commands, e.g. ['manage.py compilemessages'], found "
                                      f"{_kind(entries)}")
        hooks = []
        for i, entry in enumerate(entries):
            if isinstance(entry, dict):
                h = checker.mapping(entry, HOOK_KEYS, f"{where}[{i}]")
                hooks.append(Hook(hook_command(h["command"]), h.get("timeout", defaults.HOOK_TIMEOUT_S)))
            elif isinstance(entry, str):
                checker.value(entry, HOOK_KEYS["command"], f"{where}[{i}]")
                hooks.append(Hook(hook_command(entry)))
            else:
                raise checker.fail(f"{where}[{i}]", f"must be a command line or {{command: ..., timeout: seconds}}, "
                                                    f"found {_kind(entry)}")
        points[point] = tuple(hooks)
    return Hooks(**points)
def _process(checker: _Checker, name: Any, raw: Any) -> Process:
    """One entry of app.processes: NAME: COMMAND, or NAME: {command, singleton, stop_timeout}."""
    where = _join("app.processes", name)
    if not isinstance(name, str) or (problem := check_process_name(name)):
        raise checker.fail(where, f"{name!r} {problem or 'must be a name'}")
    if isinstance(raw, str):
        raw = {"command": raw}
    elif not isinstance(raw, dict):
        raise checker.fail(where, f"must be a command or a mapping {{command: ..., singleton: ..., stop_timeout: "
                                  f"...}}, found {_kind(raw)}")
    p = checker.mapping(raw, PROCESS_KEYS, where)
    command = process_command(p["command"])
    return Process(name=name, command=command, singleton=p.get("singleton", is_celery_beat(command)),
                   stop_timeout=p.get("stop_timeout", defaults.PROCESS_STOP_TIMEOUT_S))


def _local(raw: str, base: Path) -> Path:
    """A path on this machine, as the inventory writes it: relative to the inventory's directory."""
    return base / Path(raw).expanduser()


def _file(raw: str, base: Path, checker: _Checker, where: str, fix: str) -> Path:
    path = _local(raw, base)
    if not path.is_file():
        raise checker.fail(where, f"{raw!r}: no such file{fix}")
    return path


def resolve_path(name: str, directory: Path = INVENTORY_DIR) -> Path:
    """`production` means inventory/production.yaml; anything with a slash or .yaml suffix is a path."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name).expanduser()
    return directory / f"{name}.yaml"


def load(name: str, directory: Path = INVENTORY_DIR) -> Inventory:
    """Read and validate an inventory by name (inventory/NAME.yaml) or path."""
    path = resolve_path(name, directory)
    source = _display(path, directory)
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "example")
        hint = f"known: {', '.join(known)}" if known else "run `fab init` in your project to write one"
        raise InventoryError(f"{source}: no such inventory file ({hint})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(error, "problem", None) or str(error)
        raise InventoryError(f"{source}: {where}: not valid YAML ({problem}); check the indentation and that "
                             "every key is followed by a colon") from None
    if data is None:
        raise InventoryError(f"{source}: the file is empty; run `fab init` to write one, or start from inventory/example.yaml")
    return parse(data, source, path.parent)


def for_host(host: Host, app_name: str = defaults.APP_NAME) -> Inventory:
    """The inventory `fab -H host provision` uses when there is no inventory file: defaults, no TLS."""
    return Inventory(app=App(name=app_name), hosts=(host,))


def _display(path: Path, directory: Path) -> str:
    """The file as its owner knows it: relative to the project that holds the inventory directory."""
    try:
        return str(path.resolve().relative_to(directory.resolve().parent))
    except ValueError:
        return str(path)
