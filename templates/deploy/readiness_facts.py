# The readiness facts: what the project's settings say, read with the environment production gives them, as
# plain data (`readiness_facts`). Runs with the settings configured: on the server inside release_check.py
# (Django set up), and on the developer's machine under `fab init` with the environment the server gives the
# app (Django set up only at the end, to read the URLconf). tasks/project/readiness.py words the findings.
import ast as _ast
import copy as _copy
import importlib.util as _util
import os as _os
import re as _re
import sys as _sys
from pathlib import Path as _Path

import django as _django
from django.conf import settings as _settings


def _setting(name, default=None):
    try:  # Django 3.2+ raises on reading an empty SECRET_KEY
        return getattr(_settings, name, default)
    except Exception:  # noqa: BLE001 - any error means "not usable", which is the fact
        return default


def _candidates(patterns, prefix=""):
    """The paths of URL patterns that take no parameters, in the URLconf's order."""
    for pattern in patterns:
        route = getattr(pattern, "pattern", None)
        regex = getattr(route, "regex", None)
        if route is None or getattr(route, "converters", None) or (regex is not None and regex.groups):
            continue
        text = str(route)
        if type(route).__name__ == "RegexPattern":  # url() / re_path(): only a literal regex names one path
            text = text.lstrip("^").rstrip("$")
            if _re.search(r"(?<!\\)[.*+?\[\](){}|^$]|\\[A-Za-z0-9]", text):
                continue
            text = _re.sub(r"\\(.)", r"\1", text)
        if hasattr(pattern, "url_patterns"):  # include(): the paths under it
            for path in _candidates(pattern.url_patterns, prefix + text):
                yield path
        else:
            yield prefix + text


def _health():
    """Whether / has a page (django.urls.resolve: the URLconf is read, no request is made) and, when not, the
    first path without parameters that has one, outside the admin (it redirects to its login): the path a
    health check can ask for and get 2xx. Redirects are followed as production makes them: LocaleMiddleware's
    from / to /en/ (i18n_patterns), a RedirectView's to a fixed path. None: the URLconf could not be read here.
    On the developer's machine the URLconf is read with DEBUG off, as the server runs it: URLs added only
    for development (a debug toolbar's /__debug__/, static()) are not production's."""
    try:
        from django.apps import apps
        from django.urls import Resolver404, get_resolver, resolve
        from django.utils import translation
        if not apps.ready:  # on the developer's machine, after the facts above: only the URLconf is read, so
            # a database backend that needs no driver (the models ask it for limits as they are defined)
            _settings.DATABASES = {"default": {"ENGINE": "django.db.backends.dummy"}}
            _settings.DEBUG = False
            _django.setup()
        from django.conf.urls.i18n import is_language_prefix_patterns_used
        try:
            language = translation.get_supported_language_variant(_settings.LANGUAGE_CODE)
        except LookupError:
            language = _settings.LANGUAGE_CODE
        translation.activate(language)  # what LocaleMiddleware picks for a visitor who names no language
        prefixed, _ = is_language_prefix_patterns_used(_settings.ROOT_URLCONF)
        locale = prefixed and "django.middleware.locale.LocaleMiddleware" in list(_settings.MIDDLEWARE or ())

        def answer(path, hops=0):
            """The path whose page answers `path`, redirects followed; None: no page."""
            if hops > 5:
                return None
            try:
                match = resolve(path)
            except Resolver404:
                if locale and hops == 0:  # LocaleMiddleware redirects to the path with the language first
                    return answer("/%s%s" % (language, path), hops + 1)
                return None
            if match.args or match.kwargs or "admin" in match.namespaces:
                return None
            view = getattr(match.func, "view_class", None)
            initkwargs = getattr(match.func, "view_initkwargs", {}) or {}
            if view is not None and any(c.__name__ == "RedirectView" for c in view.__mro__):
                target = str(initkwargs.get("url") or "")
                if target.startswith("/") and not target.startswith("//") and "%(" not in target:
                    return answer(target.split("?")[0], hops + 1)
                return None
            return path

        home = answer("/")
        if home == "/":
            return {"root": True, "path": "/", "redirect": ""}
        if home:
            return {"root": False, "path": home, "redirect": home}
        found = (answer(path) for path in ("/" + text for text in _candidates(get_resolver().url_patterns)))
        return {"root": False, "path": next((path for path in found if path), ""), "redirect": ""}
    except Exception:  # noqa: BLE001 - an app or a view that does not import here: unknown, not a finding
        return None


# Strings in the DEBUG expression that name an environment variable, and those that are values, not names.
_ENV_NAME = _re.compile(r"[A-Z][A-Z0-9_]*\Z")
_NOT_NAMES = {"TRUE", "FALSE", "YES", "NO", "ON", "OFF", "Y", "N", "T", "F"}
# Values tried for a variable DEBUG is read from, until one turns it off: a DEBUG-like flag takes False or 0,
# an environment name ("DJANGO_ENV") rather production.
_OFF_VALUES = ("False", "0", "false", "off", "no")
_ENV_VALUES = ("production", "prod") + _OFF_VALUES


def _assignments(body):
    """(name, value) of the module-level assignments in `body`, in order, through if/try/with blocks."""
    for node in body:
        if isinstance(node, _ast.Assign):
            for target in node.targets:
                if isinstance(target, _ast.Name):
                    yield target.id, node.value
        elif isinstance(node, _ast.AnnAssign) and isinstance(node.target, _ast.Name) and node.value is not None:
            yield node.target.id, node.value
        elif isinstance(node, (_ast.If, _ast.With, _ast.Try)):
            for part in ("body", "orelse", "finalbody"):
                yield from _assignments(getattr(node, part, []))
            for handler in getattr(node, "handlers", []):
                yield from _assignments(handler.body)


def _env_names(node):
    """The environment variables an expression reads: os.environ.get("X"), os.getenv("X"), os.environ["X"],
    "X" in os.environ, env("X"), env.bool("X"), config("X") (django-environ, python-decouple)."""
    names = []
    for part in _ast.walk(node):
        text = None
        if isinstance(part, _ast.Call) and part.args and isinstance(part.args[0], _ast.Constant):
            text = part.args[0].value
        elif isinstance(part, _ast.Subscript) and isinstance(part.slice, _ast.Constant):
            text = part.slice.value
        elif (isinstance(part, _ast.Compare) and isinstance(part.left, _ast.Constant)
              and isinstance(part.ops[0], (_ast.In, _ast.NotIn))):
            text = part.left.value
        if (isinstance(text, str) and _ENV_NAME.match(text) and text not in _NOT_NAMES
                and text not in names):
            names.append(text)
    return names


def _debug_expression(name, depth=0):
    """Where the settings module `name` (or a module it star-imports) sets DEBUG: (its module, the expression
    with the module's earlier settings that read the environment written in); None when not found."""
    module = _sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is None or not path or depth > 4:
        return None
    try:
        tree = _ast.parse(_Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    earlier, found = {}, None
    for target, value in _assignments(tree.body):
        if target == "DEBUG":
            found = (value, dict(earlier))
        earlier[target] = value
    if found is None:  # from .base import *: the last such module that sets it
        for node in reversed(tree.body):
            if isinstance(node, _ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
                try:
                    imported = _util.resolve_name("." * node.level + (node.module or ""), module.__package__)
                except (ImportError, ValueError):
                    continue
                result = _debug_expression(imported, depth + 1)
                if result:
                    return result
        return None
    value, known = found

    class Inline(_ast.NodeTransformer):
        """A name the module set earlier from the environment, replaced by what it was set to, so that
        changing the variable changes the expression's value."""
        def __init__(self, hops):
            self.hops = hops

        def visit_Name(self, node):
            if isinstance(node.ctx, _ast.Load) and self.hops < 5 and node.id in known and _env_names(known[node.id]):
                return Inline(self.hops + 1).visit(_copy.deepcopy(known[node.id]))
            return node

    return module, _ast.fix_missing_locations(Inline(0).visit(_copy.deepcopy(value)))


def _debug_source():
    """Which environment variables DEBUG is read from, whether each is set, and a value (or None: unset) of
    one of them that turns DEBUG off, found by evaluating the settings' own expression with it. None: DEBUG
    is not read from the environment (or its setting could not be found)."""
    try:
        found = _debug_expression(_settings.SETTINGS_MODULE)
        if not found:
            return None
        module, expression = found
        names = _env_names(expression)
        if not names:
            return None
        code = compile(_ast.Expression(expression), "<DEBUG>", "eval")
    except Exception:  # noqa: BLE001 - settings that cannot be read this way: not a fact
        return None

    def value_with(name, value):
        saved = _os.environ.get(name)
        try:
            if value is None:
                _os.environ.pop(name, None)
            else:
                _os.environ[name] = value
            return bool(eval(code, dict(vars(module))))  # the settings' own code, as importing them ran it
        finally:
            if saved is None:
                _os.environ.pop(name, None)
            else:
                _os.environ[name] = saved

    off = None
    for name in names:
        for value in (_OFF_VALUES if "DEBUG" in name else _ENV_VALUES) + (None,):
            try:
                if not value_with(name, value):
                    off = [name, value]
                    break
            except Exception:  # noqa: BLE001 - a value the settings do not take
                continue
        if off:
            break
    return {"variables": [{"name": name, "set": name in _os.environ} for name in names], "off": off}


def _resolved(value):
    return str(_Path(str(value)).resolve()) if value else ""


def _channels():
    """Whether Channels is in INSTALLED_APPS, and the BACKENDs of CHANNEL_LAYERS; settings of another shape
    than Django's and Channels' documented ones count as neither."""
    try:
        installed = any(str(app) == "channels" or str(app).startswith("channels.")
                        for app in _setting("INSTALLED_APPS", None) or ())
        layers = sorted({str(layer.get("BACKEND", "")) for layer in (_setting("CHANNEL_LAYERS") or {}).values()
                         if isinstance(layer, dict)})
        return installed, layers
    except Exception:  # noqa: BLE001 - not readable: not a fact
        return False, []


_with_channels, _channel_layers = _channels()
_database = (_setting("DATABASES") or {}).get("default", {})
_key = _setting("SECRET_KEY", "") or ""
readiness_facts = {
    "django": _django.get_version(),
    "python": "%d.%d" % _sys.version_info[:2],
    "settings_module": _settings.SETTINGS_MODULE,
    "directory": str(_Path.cwd().resolve()),
    "debug": bool(_setting("DEBUG")),
    "debug_source": _debug_source(),
    "secret_key": ("environment" if _key and _key == _os.environ.get("DJANGO_SECRET_KEY") else
                   "missing" if not _key else "insecure" if str(_key).startswith("django-insecure") else "code"),
    "allowed_hosts": [str(host) for host in _setting("ALLOWED_HOSTS", [])],
    "database": {"engine": str(_database.get("ENGINE", "")), "name": str(_database.get("NAME", "")),
                 "host": str(_database.get("HOST", ""))},
    "wsgi_application": str(_setting("WSGI_APPLICATION", "") or ""),
    # What says the project serves ASGI (`fab init` writes app.server from them): its application, whether
    # Channels is installed, and the backends of Channels' layers (a Redis one needs a Redis server).
    "asgi_application": str(_setting("ASGI_APPLICATION", "") or ""),
    "channels": _with_channels,
    "channel_layers": _channel_layers,
    "static_root": _resolved(_setting("STATIC_ROOT")),
    "static_url": str(_setting("STATIC_URL") or ""),
    "media_root": _resolved(_setting("MEDIA_ROOT")),
    "media_url": str(_setting("MEDIA_URL") or ""),
    "proxy_ssl_header": [str(part) for part in (_setting("SECURE_PROXY_SSL_HEADER") or ())],
    "session_cookie_secure": bool(_setting("SESSION_COOKIE_SECURE")),
    "csrf_cookie_secure": bool(_setting("CSRF_COOKIE_SECURE")),
    "csrf_trusted_origins": [str(origin) for origin in _setting("CSRF_TRUSTED_ORIGINS", [])],
    "drivers": [name for name in ("psycopg", "psycopg2") if _util.find_spec(name)],
    # What the server gives (the secret key is only compared above, never copied here).
    "environment": {name: _os.environ.get(name, "") for name in (
        "DJANGO_ALLOWED_HOSTS", "DJANGO_DB_NAME", "DATABASE_URL", "DJANGO_STATIC_ROOT", "DJANGO_MEDIA_ROOT",
        "DJANGO_HTTPS")},
}


def _uploads():
    """The models' file fields (FileField, ImageField: what takes uploads), once the apps are loaded; None:
    not known here."""
    try:
        from django.apps import apps
        from django.db.models import FileField
        if not apps.ready:
            return None
        return sorted("%s.%s" % (model._meta.label, field.name) for model in apps.get_models()
                      for field in model._meta.fields if isinstance(field, FileField))
    except Exception:  # noqa: BLE001 - models that do not load here: unknown, not a finding
        return None


readiness_facts["health"] = _health()  # last: here it sets up Django, which the facts above do not need
readiness_facts["uploads"] = _uploads()  # after the set-up
