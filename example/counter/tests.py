import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

from django.db import OperationalError, connection
from django.test import SimpleTestCase, TestCase, override_settings

from mysite.version import VERSION

from .models import Hit

# The manifest that ManifestStaticFilesStorage needs exists only after collectstatic; tests use plain names.
PLAIN_STATIC_FILES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


@override_settings(STORAGES=PLAIN_STATIC_FILES)
@mock.patch.dict(os.environ, {"GANGWAY_RELEASE": "20261124T0500Z-abc1234"})
class PagesTests(TestCase):
    def test_index_records_a_hit_and_shows_version_release_and_count(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(Hit.objects.get().path, "/")
        self.assertContains(response, f'<dd id="version">{VERSION}</dd>', html=True)
        self.assertContains(response, '<dd id="release">20261124T0500Z-abc1234</dd>', html=True)
        self.assertContains(response, '<dd id="hits">1</dd>', html=True)
        self.assertContains(response, 'href="/static/counter/style.css"')

        response = self.client.get("/")
        self.assertContains(response, '<dd id="hits">2</dd>', html=True)
        self.assertEqual(Hit.objects.count(), 2)

    def test_release_is_unknown_when_not_set(self):
        with mock.patch.dict(os.environ):
            del os.environ["GANGWAY_RELEASE"]
            response = self.client.get("/version/")
        self.assertEqual(response.content.decode(), f"{VERSION} unknown")

    def test_healthz_is_ok_and_records_no_hit(self):
        response = self.client.get("/healthz/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok", "version": VERSION, "release": "20261124T0500Z-abc1234"})
        self.assertFalse(Hit.objects.exists())

    def test_healthz_reports_a_database_failure_with_503(self):
        with (
            mock.patch.object(connection, "cursor", side_effect=OperationalError("connection refused")),
            self.assertLogs("counter.views", "ERROR"),
            self.assertLogs("django.request", "ERROR"),
        ):
            response = self.client.get("/healthz/")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["status"], "error")
        self.assertEqual(response.json()["error"], "connection refused")

    def test_version_is_plain_text_and_never_touches_the_database(self):
        with self.assertNumQueries(0):
            response = self.client.get("/version/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "text/plain; charset=utf-8")
        self.assertEqual(response.content.decode(), f"{VERSION} 20261124T0500Z-abc1234")

    @override_settings(SECURE_SSL_REDIRECT=True)
    def test_plain_http_is_redirected_except_for_healthz(self):
        response = self.client.get("/version/")
        self.assertRedirects(response, "https://testserver/version/", 301, fetch_redirect_response=False)
        # Through nginx: it tells the app the request came over HTTPS.
        response = self.client.get("/version/", headers={"x-forwarded-proto": "https"})
        self.assertEqual(response.status_code, 200)
        # Straight to Gunicorn's socket, as a health check may be.
        response = self.client.get("/healthz/")
        self.assertEqual(response.status_code, 200)


class SettingsTests(SimpleTestCase):
    """The settings read the environment once, at startup: each case starts a fresh Python."""

    def settings_in(self, env, code):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        return subprocess.run(
            [sys.executable, "-c", f"from mysite import settings as s; {code}"],
            cwd=Path(__file__).resolve().parent.parent,
            env=clean | env,
            capture_output=True,
            text=True,
        )

    def test_a_missing_secret_key_stops_startup_unless_debug(self):
        result = self.settings_in({"DJANGO_DB_NAME": "mysite"}, "pass")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ImproperlyConfigured: DJANGO_SECRET_KEY is not set", result.stderr)

        result = self.settings_in({"DJANGO_DEBUG": "1"}, "print(s.DATABASES['default']['ENGINE'])")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "django.db.backends.sqlite3")

    def test_production_uses_postgresql_over_the_local_socket(self):
        env = {
            "DJANGO_SECRET_KEY": "x" * 50,
            "DJANGO_DB_NAME": "mysite",
            "DJANGO_ALLOWED_HOSTS": "app.test, www.app.test,.app.test",
        }
        db = "s.DATABASES['default']"
        code = f"print(s.DEBUG, {db}['ENGINE'], {db}['NAME'], repr({db}['HOST']), s.CSRF_TRUSTED_ORIGINS)"
        result = self.settings_in(env, code)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.strip(),
            "False django.db.backends.postgresql mysite '' ['https://app.test', 'https://www.app.test']",
        )
