"""
Django settings for mysite.

Everything that differs between a laptop and the server comes from the environment; on the server, systemd
loads it from the app's env file. Nothing secret lives in this file.

    DJANGO_SECRET_KEY            Required: a long random string (50+ characters), e.g. from
                                 python -c "import secrets; print(secrets.token_urlsafe(50))"
                                 Only with DEBUG on may it be left out: then an insecure development key is used.
    DJANGO_DEBUG                 "1" or "true" turns debug mode on. Default: off. Never on in production.
    DJANGO_ALLOWED_HOSTS         Comma-separated host names the site answers to, e.g.
                                 "example.com,www.example.com". Default: none (with DEBUG on, Django still
                                 allows localhost).
    DJANGO_CSRF_TRUSTED_ORIGINS  Comma-separated origins trusted for unsafe requests (forms, POST), e.g.
                                 "https://example.com". Default: https:// + each allowed host that is not a
                                 wildcard.
    DJANGO_DB_NAME               The PostgreSQL database. The app connects over the local Unix socket with peer
                                 authentication: no host, no user, no password; the Unix user the app runs as
                                 is its database role. Required unless DEBUG is on, where leaving it out uses
                                 SQLite (db.sqlite3 in the project directory) for local development.
    DJANGO_STATIC_ROOT           Where collectstatic writes. Default: static/ in the project directory.
    DJANGO_MEDIA_ROOT            Where uploaded files go. Default: media/ in the project directory.
    DJANGO_HTTPS                 "0" when the site is served over plain HTTP (a server without a domain).
                                 Default: HTTPS, with redirects and secure cookies.

Not a setting of this file, but shown on the pages: GANGWAY_RELEASE, the release that answered (see
counter/views.py).

Production runs behind nginx, which terminates TLS and tells the app the original scheme in
X-Forwarded-Proto. Check the production settings with:

    python manage.py check --deploy --fail-level WARNING

https://docs.djangoproject.com/en/5.2/topics/settings/
https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name, default=""):
    return os.environ.get(name, "").strip() or default


def env_bool(name):
    return env_str(name).lower() in {"1", "true"}


def env_list(name):
    return [item.strip() for item in env_str(name).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG")

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string (50+ characters), e.g. the output of "
            'python -c "import secrets; print(secrets.token_urlsafe(50))", or set DJANGO_DEBUG=1 for local development.'
        )
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")

# "*" and ".example.com" (a domain and its subdomains) are wildcards: list their origins explicitly.
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS") or [
    f"https://{host}" for host in ALLOWED_HOSTS if "*" not in host and not host.startswith(".")
]


# Application definition

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "counter",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"


# Database
# https://docs.djangoproject.com/en/5.2/ref/settings/#databases

DB_NAME = env_str("DJANGO_DB_NAME")
if DB_NAME:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DB_NAME,
            # Empty: the local Unix socket and peer authentication, so the Unix user is the role.
            "USER": "",
            "PASSWORD": "",
            "HOST": "",
            "PORT": "",
            # Keep connections open between requests, and check a reused one before trusting it.
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    }
elif DEBUG:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
        }
    }
else:
    raise ImproperlyConfigured(
        "DJANGO_DB_NAME is not set. Set it to the PostgreSQL database's name, "
        "or set DJANGO_DEBUG=1 to use SQLite for local development."
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Password validation
# https://docs.djangoproject.com/en/5.2/ref/settings/#auth-password-validators

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


# Internationalization
# https://docs.djangoproject.com/en/5.2/topics/i18n/

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True


# Static files and uploads. nginx serves both straight from disk: STATIC_ROOT is filled by collectstatic,
# MEDIA_ROOT by uploads. Static file names carry a hash of their content, so they can be cached for long.
# https://docs.djangoproject.com/en/5.2/howto/static-files/

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", BASE_DIR / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("DJANGO_MEDIA_ROOT", BASE_DIR / "media"))

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
    },
}


# Security. nginx terminates TLS and sets X-Forwarded-Proto; only nginx can reach Gunicorn's socket, so the
# header can be trusted.
# https://docs.djangoproject.com/en/5.2/ref/middleware/#module-django.middleware.security

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Served over HTTPS, as it should be. A server without a domain (no certificate) is plain HTTP: gangway then
# sets DJANGO_HTTPS=0, so the app neither redirects to an https:// address nothing answers nor makes cookies
# a browser would never send back.
HTTPS = not DEBUG and env_str("DJANGO_HTTPS", "1") != "0"
SECURE_SSL_REDIRECT = HTTPS
# A health check may come straight to Gunicorn's socket, without nginx and its X-Forwarded-Proto.
SECURE_REDIRECT_EXEMPT = [r"^healthz/$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = 63072000  # two years; sent only over HTTPS
# HSTS for every subdomain, and the browsers' preload list, commit the whole domain, including names this
# app does not serve, to HTTPS for years. That is the domain owner's call, not this app's: both stay off,
# and `check --deploy` is told that this was decided, not forgotten.
SECURE_HSTS_INCLUDE_SUBDOMAINS = False
SECURE_HSTS_PRELOAD = False
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]


# Logging: everything at INFO and above to stderr, where systemd's journal collects it (with timestamps).
# https://docs.djangoproject.com/en/5.2/topics/logging/

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "{levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        # Replaces Django's default handlers for it (console only with DEBUG on, mail to ADMINS).
        "django": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
