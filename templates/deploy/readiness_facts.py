# The readiness facts: what the project's settings say, read with the environment production gives them, as
# plain data (`readiness_facts`). Runs once Django is set up: on the server inside release_check.py, on the
# developer's machine under `fab init` (with a stand-in environment). tasks/readiness.py words the findings.
import importlib.util as _util
import os as _os
import sys as _sys
from pathlib import Path as _Path

import django as _django
from django.conf import settings as _settings


def _setting(name, default=None):
    try:  # Django 3.2+ raises on reading an empty SECRET_KEY
        return getattr(_settings, name, default)
    except Exception:  # noqa: BLE001 - any error means "not usable", which is the fact
        return default


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
    "media_root": _resolved(_setting("MEDIA_ROOT")),
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
