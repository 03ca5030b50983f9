"""Which Django runs on which Python, and what breaks on the way up: facts from Django's release notes, pure.

The server's Python is Debian's: 3.11 on Debian 12, 3.13 on Debian 13. A project pinned to a Django that
does not run there fails at `pip install` or at its first import, so `fab init` and every deploy say early
which versions can, and what usually needs changing in the code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# Debian release -> its python3.
DEBIAN_PYTHON = {"12": (3, 11), "13": (3, 13)}
# What `fab init` assumes before it has seen the server: the current Debian stable.
DEFAULT_SERVER_PYTHON = DEBIAN_PYTHON["13"]


@dataclass(frozen=True)
class Series:
    """A Django feature release (e.g. 4.2) and the Pythons it supports, from its release notes."""
    version: tuple[int, int]
    pythons: tuple[tuple[int, int], ...]
    lts: bool = False
    # A Python that only a later patch release supports: {(3, 13): (5, 1, 3)}.
    since: tuple[tuple[tuple[int, int], tuple[int, int, int]], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def first_patch_for(self, python: tuple[int, int]) -> tuple[int, int, int] | None:
        """The first release of this series that runs on `python` (None: none does)."""
        if python not in self.pythons:
            return None
        return dict(self.since).get(python, (*self.version, 0))


def _pythons(low: int, high: int) -> tuple[tuple[int, int], ...]:
    return tuple((3, minor) for minor in range(low, high + 1))


SERIES = (
    Series((1, 11), _pythons(4, 7), lts=True, since=(((3, 7), (1, 11, 17)),)),
    Series((2, 0), _pythons(4, 7)),
    Series((2, 1), _pythons(5, 7)),
    Series((2, 2), _pythons(5, 9), lts=True, since=(((3, 8), (2, 2, 8)), ((3, 9), (2, 2, 17)))),
    Series((3, 0), _pythons(6, 9), since=(((3, 9), (3, 0, 11)),)),
    Series((3, 1), _pythons(6, 9), since=(((3, 9), (3, 1, 3)),)),
    Series((3, 2), _pythons(6, 10), lts=True, since=(((3, 10), (3, 2, 9)),)),
    Series((4, 0), _pythons(8, 10)),
    Series((4, 1), _pythons(8, 11), since=(((3, 11), (4, 1, 3)),)),
    Series((4, 2), _pythons(8, 12), lts=True, since=(((3, 12), (4, 2, 8)),)),
    Series((5, 0), _pythons(10, 12)),
    Series((5, 1), _pythons(10, 13), since=(((3, 13), (5, 1, 3)),)),
    Series((5, 2), _pythons(10, 14), lts=True, since=(((3, 14), (5, 2, 8)),)),
    Series((6, 0), _pythons(12, 14)),
    Series((6, 1), _pythons(12, 14)),
)

@dataclass(frozen=True)
class Break:
    """What usually needs changing in a project's code when it moves past a Django version: the first version
    without it, the change, (when there is one) the error an unchanged project meets, as a pattern, and what
    code that still needs the change contains (`uses`, see `removed_uses`)."""
    since: tuple[int, int]
    change: str
    error: str = ""
    uses: tuple[str, ...] = ()

    @property
    def hint(self) -> str:
        return f"since Django {self.since[0]}.{self.since[1]}, {self.change}"


# `uses`: "import:MODULE" (importing it, or from it), "import:MODULE:NAME" (importing NAME from MODULE),
# "call:NAME" (calling NAME without an on_delete= and with fewer than two positional arguments: the model
# fields that need one), "setting:NAME" (assigning NAME at a module's top level), "method:NAME" (calling a
# method NAME), "template:LIBRARY" ({% load LIBRARY %} in a template).
_TRANSLATION = "import:django.utils.translation:"
BREAKS = (
    Break((2, 0), "`django.core.urlresolvers` is gone: import `reverse` from `django.urls`",
          r"No module named 'django\.core\.urlresolvers'", ("import:django.core.urlresolvers",)),
    Break((2, 0), "`ForeignKey` and `OneToOneField` need `on_delete=`, e.g. `on_delete=models.CASCADE`",
          r"missing 1 required positional argument: 'on_delete'", ("call:ForeignKey", "call:OneToOneField")),
    Break((2, 0), "`MIDDLEWARE_CLASSES` is gone: the setting is `MIDDLEWARE`", uses=("setting:MIDDLEWARE_CLASSES",)),
    Break((3, 0), "`django.utils.six` is gone: a package importing it predates your Django (upgrade it); in your "
                  "own code use Python 3 itself (`str`, `import io`), or the `six` package",
          r"No module named 'django\.utils\.six'", ("import:django.utils.six",)),
    Break((3, 0), "`django.utils.encoding.python_2_unicode_compatible` is gone: delete the decorator",
          r"cannot import name 'python_2_unicode_compatible'",
          ("import:django.utils.encoding:python_2_unicode_compatible",)),
    Break((3, 0), "`{% load staticfiles %}` and `{% load admin_static %}` are gone: write `{% load static %}`",
          r"'(staticfiles|admin_static)' is not a registered tag library",
          ("template:staticfiles", "template:admin_static")),
    Break((4, 0), "`url()` from `django.conf.urls` is gone: use `path()` or `re_path()` from `django.urls`, e.g. "
                  "`url(r'^post/(?P<pk>\\d+)/$', views.post_detail)` becomes "
                  "`path('post/<int:pk>/', views.post_detail)`",
          r"cannot import name 'url' from 'django\.conf\.urls'", ("import:django.conf.urls:url",)),
    Break((4, 0), "`ugettext` and friends are gone: use `gettext`, `gettext_lazy`",
          r"cannot import name '(u?gettext(_lazy)?|ugettext_noop|ungettext(_lazy)?)'",
          tuple(_TRANSLATION + name for name in ("ugettext", "ugettext_lazy", "ugettext_noop", "ungettext",
                                                 "ungettext_lazy"))),
    Break((4, 0), "`django.utils.encoding.force_text` and `smart_text` are gone: use `force_str` and `smart_str`",
          r"cannot import name '(force_text|smart_text)'",
          ("import:django.utils.encoding:force_text", "import:django.utils.encoding:smart_text")),
    Break((4, 0), "`request.is_ajax()` is gone: test `request.headers.get('x-requested-with') == "
                  "'XMLHttpRequest'`", r"object has no attribute 'is_ajax'", ("method:is_ajax",)),
    Break((4, 0), "CSRF_TRUSTED_ORIGINS entries need their scheme, e.g. 'https://example.com'", r"4_0\.E001"),
    Break((5, 0), "`DEFAULT_FILE_STORAGE` and `STATICFILES_STORAGE` give way to the `STORAGES` setting (removed "
                  "in 5.1)", uses=("setting:DEFAULT_FILE_STORAGE", "setting:STATICFILES_STORAGE")),
)


@dataclass(frozen=True)
class Use:
    """Code that needs a change Django made: the line it is on and the Break."""
    line: int
    what: str  # what the code does, e.g. "imports url from django.conf.urls"
    change: Break


def removed_uses(source: str, until: tuple[int, ...], template: bool = False) -> list[Use]:
    """Where `source` (a Python file's text, or a template's with `template`) uses what Django removed up to
    version `until`: read, never run. A file Python cannot parse has none that can be told."""
    breaks = [b for b in BREAKS if b.uses and b.since <= tuple(until[:2])]
    if template:
        return [Use(number, f"loads the tag library {library}", b)
                for number, text in enumerate(source.splitlines(), 1)
                for b in breaks for use in b.uses if use.startswith("template:")
                for library in [use.partition(":")[2]]
                if re.search(r"{%\s*load\s[^%]*\b" + re.escape(library) + r"\b[^%]*%}", text)]
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        for b in breaks:
            for use in b.uses:
                what = _used(node, use, tree)
                if what:
                    found.append(Use(node.lineno, what, b))
    return sorted(found, key=lambda u: u.line)


def _used(node: ast.AST, use: str, tree: ast.Module) -> str:
    kind, _, rest = use.partition(":")
    if kind == "import":
        module, _, name = rest.partition(":")
        if isinstance(node, ast.Import) and not name:
            return next((f"imports {a.name}" for a in node.names
                         if a.name == module or a.name.startswith(module + ".")), "")
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not name and (node.module == module or node.module.startswith(module + ".")):
                return f"imports from {node.module}"
            if name and node.module == module and any(a.name == name for a in node.names):
                return f"imports {name} from {module}"
        return ""
    if kind == "call" and isinstance(node, ast.Call):
        called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if called == rest and len(node.args) < 2 and not any(k.arg == "on_delete" or k.arg is None
                                                             for k in node.keywords):
            return f"calls {rest}() without on_delete"
        return ""
    if kind == "method" and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return f"calls .{rest}()" if node.func.attr == rest else ""
    if kind == "setting" and isinstance(node, (ast.Assign, ast.AnnAssign)) and node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return f"sets {rest}" if any(isinstance(t, ast.Name) and t.id == rest for t in targets) else ""
    return ""


def series(version: tuple[int, ...]) -> Series | None:
    return next((s for s in SERIES if s.version == tuple(version[:2])), None)


def runs_on(version: tuple[int, ...], python: tuple[int, int]) -> bool | None:
    """Whether this Django version runs on `python` (None: a series this table does not know)."""
    known = series(version)
    if known is None:
        return None
    first = known.first_patch_for(python)
    return first is not None and tuple(version[:3]) + (0,) * (3 - len(version[:3])) >= first


def series_for(python: tuple[int, int]) -> list[Series]:
    """The Django series that run on `python`, oldest first."""
    return [s for s in SERIES if s.first_patch_for(python)]


def runs_on_names(python: tuple[int, int]) -> str:
    """The Django versions that run on `python`, readable: '5.1 (from 5.1.3), 5.2 LTS, 6.0'."""
    return ", ".join(s.name + (" LTS" if s.lts else "") + _from(s.first_patch_for(python))
                     for s in series_for(python))


def _from(first: tuple[int, int, int] | None) -> str:
    return f" (from {'.'.join(map(str, first))})" if first and first[2] else ""


def nearest_lts(python: tuple[int, int], wanted: tuple[int, ...] = (0, 0)) -> Series:
    """The LTS that runs on `python` closest above `wanted` (the project's version); else the newest LTS that
    runs there (moving up is the way: old series get no security fixes)."""
    lts = [s for s in series_for(python) if s.lts]
    return next((s for s in lts if s.version >= tuple(wanted[:2])), lts[-1])


def nearest_lts_on(pythons: tuple[tuple[int, int], ...], wanted: tuple[int, ...] = (0, 0)) -> Series | None:
    """The LTS closest above `wanted` that runs on every one of `pythons` (else the newest that does; None:
    none does)."""
    lts = [s for s in SERIES if s.lts and all(s.first_patch_for(python) for python in pythons)]
    return next((s for s in lts if s.version >= tuple(wanted[:2])), lts[-1] if lts else None)


def requirement_on(chosen: Series, pythons: tuple[tuple[int, int], ...]) -> str:
    """The pin for `chosen` from its first patch that runs on every one of `pythons`."""
    return max((requirement(chosen, python) for python in pythons),
               key=lambda pin: parse_version(pin.partition(">=")[2]) or (0,))


def debian_releases(django: tuple[int, ...]) -> tuple[list[str], list[str]] | None:
    """The Debian releases gangway sets up whose python3 this Django runs on, and those it does not (None: a
    series the table does not know)."""
    runs = {release: runs_on(django, python) for release, python in DEBIAN_PYTHON.items()}
    if any(value is None for value in runs.values()):
        return None
    return [r for r, ok in runs.items() if ok], [r for r, ok in runs.items() if not ok]


def debian_name(release: str) -> str:
    python = DEBIAN_PYTHON[release]
    return f"Debian {release} (Python {python[0]}.{python[1]})"


def requirement(chosen: Series, python: tuple[int, int]) -> str:
    """The pin for `chosen` on `python`: the series, from the first patch that runs there."""
    first = chosen.first_patch_for(python) or (*chosen.version, 0)
    low = ".".join(str(n) for n in (first if first[2] else first[:2]))
    return f"Django>={low},<{chosen.version[0]}.{chosen.version[1] + 1}"


def breaks_between(old: tuple[int, ...], new: tuple[int, ...]) -> list[str]:
    """What usually breaks moving from Django `old` to `new`."""
    return [b.change for b in BREAKS if tuple(old[:2]) < b.since <= tuple(new[:2])]


def break_behind(error: str) -> Break | None:
    """The change a project missed, judged from the error it meets on a newer Django."""
    return next((b for b in BREAKS if b.error and re.search(b.error, error)), None)


def parse_version(text: str) -> tuple[int, ...] | None:
    """(1, 11, 29) from '1.11.29'; (5, 2) from '5.2' or '5.2rc1'; None when it is not a version."""
    match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(n) for n in match.groups() if n is not None)


def python_version(text: str) -> tuple[int, int] | None:
    """(3, 13) from '3.13.5' or '3.13'; None when it says no Python version."""
    version = parse_version(text)
    return (version[0], version[1]) if version else None


def python_name(python: tuple[int, int]) -> str:
    debian = next((f" (Debian {release})" for release, p in DEBIAN_PYTHON.items() if p == python), "")
    return f"Python {python[0]}.{python[1]}{debian}"


# A requirement line naming Django: `Django==1.11.29`, `django>=3.2,<4`, `Django~=4.2.0`, `Django` (unpinned).
_DJANGO_LINE = re.compile(r"(?im)^\s*django\s*(\[[^\]]*\])?\s*(?P<spec>[=<>~!][^;#\n]*)?(?:[;#].*)?$")
_PIN = re.compile(r"(==|~=|>=|===)\s*(?P<version>[0-9][0-9a-z.*]*)")


def django_requirement(requirements: str) -> tuple[str, tuple[int, ...] | None] | None:
    """The Django line of a requirements text and the version it pins (or its lower bound): ('Django==1.11.29',
    (1, 11, 29)); (line, None) when Django is named without a version; None when Django is not named."""
    match = _DJANGO_LINE.search(requirements)
    if not match:
        return None
    pin = _PIN.search(match["spec"] or "")
    return match.group(0).strip(), parse_version(pin["version"]) if pin else None


# The PostgreSQL drivers Django uses: psycopg (3) from Django 4.2, psycopg2 for every version.
_DRIVER_LINE = re.compile(r"(?im)^\s*(psycopg2|psycopg2-binary|psycopg|psycopg-binary)\b")


def names_postgres_driver(requirements: str) -> bool:
    return bool(_DRIVER_LINE.search(requirements))


# The packages whose apps need a Redis server: Celery's and RQ's queues, Django's Redis caches, Channels' layer.
_REDIS_CLIENT_LINE = re.compile(r"(?im)^\s*(celery|django-rq|rq|django-redis|channels-redis|redis)"
                                r"(?![A-Za-z0-9._-]*[A-Za-z0-9])")


def redis_clients(requirements: str) -> list[str]:
    """The requirements' packages that need a Redis server, lower case, in order, once each."""
    return list(dict.fromkeys(m[1].lower() for m in _REDIS_CLIENT_LINE.finditer(requirements)))


def postgres_driver(django: tuple[int, ...]) -> str:
    """The driver line for a requirements file: psycopg 3 from Django 4.2 on, psycopg2 before."""
    return "psycopg[binary]>=3.2,<4" if tuple(django[:2]) >= (4, 2) else "psycopg2-binary>=2.8,<2.10"
