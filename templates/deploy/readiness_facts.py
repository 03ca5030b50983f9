# The readiness facts: what the project's settings say, read with the environment production gives them, as
# plain data (`readiness_facts`). Runs with the settings configured: on the server inside release_check.py
# (Django set up), and on the developer's machine under `fab init` with the environment the server gives the
# app (Django set up only at the end, to read the URLconf). tasks/project/readiness.py words the findings.
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


def _resolved(value):
    return str(_Path(str(value)).resolve()) if value else ""


_database = (_setting("DATABASES") or {}).get("default", {})
_key = _setting("SECRET_KEY", "") or ""
readiness_facts = {
    "django": _django.get_version(),
    "python": "%d.%d" % _sys.version_info[:2],
    "settings_module": _settings.SETTINGS_MODULE,
    "directory": str(_Path.cwd().resolve()),
    "debug": bool(_setting("DEBUG")),
    "secret_key": ("environment" if _key and _key == _os.environ.get("DJANGO_SECRET_KEY") else
                   "missing" if not _key else "insecure" if str(_key).startswith("django-insecure") else "code"),
    "allowed_hosts": [str(host) for host in _setting("ALLOWED_HOSTS", [])],
    "database": {"engine": str(_database.get("ENGINE", "")), "name": str(_database.get("NAME", "")),
                 "host": str(_database.get("HOST", ""))},
    "wsgi_application": str(_setting("WSGI_APPLICATION", "") or ""),
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
