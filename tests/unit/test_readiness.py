"""The readiness check's findings, one problem at a time, on facts as templates/deploy/readiness_facts.py
reports them; and compat's table of which Django runs on which Python."""

from __future__ import annotations

import copy

import pytest

from tasks.project import compat, readiness

RELEASE = "/srv/mysite/releases/20260101T000000Z-abcdef0"
READY = {
    "django": "5.2.8", "python": "3.13", "settings_module": "mysite.settings_production", "directory": RELEASE,
    "debug": False, "debug_source": None, "secret_key": "environment", "allowed_hosts": ["app.test", "www.app.test"],
    "database": {"engine": "django.db.backends.postgresql", "name": "mysite", "host": ""},
    "wsgi_application": "mysite.wsgi.application",
    "static_root": f"{RELEASE}/static", "media_root": "/srv/mysite/shared/media", "static_url": "/static/",
    "media_url": "/media/", "uploads": ["blog.Post.photo"],
    "proxy_ssl_header": ["HTTP_X_FORWARDED_PROTO", "https"], "session_cookie_secure": True,
    "csrf_cookie_secure": True, "csrf_trusted_origins": ["https://app.test", "https://www.app.test"],
    "drivers": ["psycopg"],
    "environment": {"DJANGO_ALLOWED_HOSTS": "app.test,www.app.test", "DJANGO_DB_NAME": "mysite",
                    "DATABASE_URL": "postgres:///mysite", "DJANGO_STATIC_ROOT": f"{RELEASE}/static",
                    "DJANGO_MEDIA_ROOT": "/srv/mysite/shared/media", "DJANGO_HTTPS": "1"},
}
REQUIREMENTS = "Django>=5.2.8,<5.3\npsycopg[binary]>=3.2,<4\ngunicorn>=23,<24\n"


def facts(**changes) -> dict:
    result = copy.deepcopy(READY)
    for key, value in changes.items():
        if key in result["environment"]:
            result["environment"][key] = value
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key].update(value)
        else:
            result[key] = value
    return result


def only(found: list[readiness.Finding]) -> readiness.Finding:
    assert len(found) == 1, [f.text for f in found]
    return found[0]


def test_settings_that_take_everything_from_the_environment_are_ready():
    assert readiness.server_findings(facts()) == []
    assert readiness.local_findings(facts(), REQUIREMENTS, "requirements.txt") == []


def test_debug_on_blocks_and_says_how_to_turn_it_off():
    finding = only(readiness.server_findings(facts(debug=True)))
    assert finding.blocking
    assert finding.text.startswith("DEBUG is on in production: error pages would show your code")
    assert "DEBUG = False" in finding.text


@pytest.mark.parametrize("kind, start", [("code", "SECRET_KEY is written in your settings"),
                                         ("insecure", "SECRET_KEY is Django's 'django-insecure-' development key")])
def test_a_secret_key_in_the_code_is_named_with_the_fix(kind, start):
    finding = only(readiness.server_findings(facts(secret_key=kind)))
    assert not finding.blocking and finding.text.startswith(start)
    assert "forge sessions" in finding.text and "os.environ['DJANGO_SECRET_KEY']" in finding.text


def test_allowed_hosts_that_miss_a_domain_block_naming_it():
    finding = only(readiness.server_findings(facts(allowed_hosts=["app.test"])))
    assert finding.blocking
    assert "ALLOWED_HOSTS is ['app.test'], which does not cover www.app.test: Django answers 400" in finding.text
    assert "os.environ['DJANGO_ALLOWED_HOSTS'].split(',')" in finding.text
    assert "ALLOWED_HOSTS is empty, which does not cover app.test, www.app.test" in only(
        readiness.server_findings(facts(allowed_hosts=[]))).text


@pytest.mark.parametrize("patterns", [["*"], [".app.test"], ["APP.TEST", "www.app.test."]])
def test_host_patterns_follow_djangos_rule(patterns):
    assert readiness.server_findings(facts(allowed_hosts=patterns)) == []


def test_sqlite_blocks_and_points_at_postgresql_and_import_data():
    finding = only(readiness.server_findings(facts(database={"engine": "django.db.backends.sqlite3",
                                                             "name": f"{RELEASE}/db.sqlite3"})))
    assert finding.blocking and finding.text.startswith(f"the database is SQLite ({RELEASE}/db.sqlite3)")
    assert "DATABASE_URL" in finding.text and "fab import-data" in finding.text


def test_settings_that_ignore_the_servers_database_say_so():
    finding = only(readiness.server_findings(facts(database={"name": "blog_dev"})))
    assert not finding.blocking
    assert "names the database 'blog_dev', not the server's 'mysite': your settings ignore the environment" \
        in finding.text and "postgres:///mysite" in finding.text


def test_static_root_outside_the_release_blocks_inside_is_fine():
    finding = only(readiness.server_findings(facts(static_root="/var/www/static")))
    assert finding.blocking
    assert finding.text.startswith("STATIC_ROOT is /var/www/static, outside the project: nginx serves each "
                                   "release's static files from the release itself, so every CSS and JS file "
                                   "would answer 404")
    assert "STATIC_ROOT = os.environ.get('DJANGO_STATIC_ROOT', BASE_DIR / 'staticfiles')" in finding.text
    assert readiness.server_findings(facts(static_root=f"{RELEASE}/staticfiles")) == []
    assert readiness.server_findings(facts(static_root=f"{RELEASE}-other/static"))[0].blocking
    assert only(readiness.server_findings(facts(static_root=""))).text.startswith("STATIC_ROOT is not set")


def test_media_root_not_the_shared_media_directory_blocks():
    finding = only(readiness.server_findings(facts(media_root=f"{RELEASE}/media")))
    assert finding.blocking
    assert f"MEDIA_ROOT is {RELEASE}/media, not /srv/mysite/shared/media: nginx serves /media/ from " \
           "/srv/mysite/shared/media" in finding.text
    assert "os.environ.get('DJANGO_MEDIA_ROOT'" in finding.text
    unset = only(readiness.server_findings(facts(media_root="")))
    assert not unset.blocking and unset.text.startswith("MEDIA_ROOT is not set")


def test_no_postgresql_driver_in_the_release_or_the_requirements():
    finding = only(readiness.server_findings(facts(drivers=[])))
    assert finding.blocking and finding.text.startswith("no PostgreSQL driver is installed in the release")
    local = only(readiness.local_findings(facts(), "Django>=5.2.8,<5.3\n", "requirements.txt"))
    assert local.blocking
    assert local.text == ("requirements.txt names no PostgreSQL driver: Django cannot reach the server's "
                          "PostgreSQL without one, so add psycopg[binary]>=3.2,<4")


def test_no_requirements_file_blocks():
    finding = only(readiness.local_findings(facts(), None, "requirements.txt"))
    assert finding.blocking and finding.text.startswith("there is no requirements.txt: the server builds")


def test_settings_that_could_not_be_imported_still_get_the_requirements_checked():
    found = readiness.local_findings(None, "Django==1.11.29\n", "requirements.txt")
    assert [f.text.split(":")[0] for f in found] == [
        "Django 1.11.29 runs neither on Debian 12 (Python 3.11) nor on Debian 13 (Python 3.13), the Debian "
        "releases gangway sets up, so pip or its first import would fail on the server", "requirements.txt names "
        "no PostgreSQL driver"]


def test_django_too_old_for_the_servers_python_names_the_versions_that_can_and_what_breaks():
    finding = only(readiness.local_findings(facts(), "Django==1.11.29\npsycopg2-binary\n", "requirements.txt"))
    text = finding.text
    assert text.startswith("Django 1.11.29 runs neither on Debian 12 (Python 3.11) nor on Debian 13 (Python "
                           "3.13), the Debian releases gangway sets up")
    assert "pin e.g. Django>=5.2,<5.3 in requirements.txt (5.2 LTS runs on both)" in text
    assert "`url()` from `django.conf.urls` is gone" in text and "`django.utils.six` is gone" in text
    # init shows what the code uses of it instead (scanned): no list of what usually breaks.
    scanned = only(readiness.local_findings(facts(), "Django==1.11.29\npsycopg2-binary\n", "requirements.txt",
                                            scanned=True))
    assert "usually need changing" not in scanned.text and "5.2 LTS runs on both" in scanned.text
    on_bookworm = only(readiness.server_findings(facts(django="3.2.25", python="3.11")))
    assert on_bookworm.text.startswith("Django 3.2.25 does not run on the server's Python 3.11 (Debian 12)")
    assert "4.1 (from 4.1.3), 4.2 LTS, 5.0, 5.1, 5.2 LTS run on it" in on_bookworm.text
    assert "Django>=4.2,<4.3" in on_bookworm.text and "django.utils.six" not in on_bookworm.text


@pytest.mark.parametrize("pin, text", [
    ("Django==4.2.3", "if the server is Debian 13 (Python 3.13), Django 4.2.3 does not run there, so pip or its "
                      "first import would fail (5.1 (from 5.1.3), 5.2 LTS, 6.0, 6.1 run on it); on Debian 12 "
                      "(Python 3.11) it runs. For a server of either release, pin e.g. Django>=5.2,<5.3"),
    ("Django==6.0.1", "if the server is Debian 12 (Python 3.11), Django 6.0.1 does not run there"),
])
def test_before_the_server_is_known_a_django_for_one_release_is_a_condition_not_a_fact(pin, text):
    finding = only(readiness.local_findings(facts(), pin + "\npsycopg[binary]\n", "requirements.txt"))
    assert finding.text.startswith(text) and "the server's Python" not in finding.text
    assert readiness.local_findings(facts(), "Django==5.2.8\npsycopg[binary]\n", "requirements.txt") == []


def test_django_too_new_for_the_servers_python():
    finding = only(readiness.server_findings(facts(django="6.0.1", python="3.11")))
    assert finding.text.startswith("Django 6.0.1 does not run on the server's Python 3.11 (Debian 12)")
    assert "Django>=4.2,<4.3" not in finding.text and "5.2 LTS" in finding.text


def test_https_behind_the_proxy_header_cookies_and_csrf_origins():
    found = readiness.server_findings(facts(proxy_ssl_header=[], session_cookie_secure=False,
                                            csrf_cookie_secure=False, csrf_trusted_origins=[]))
    texts = [f.text for f in found]
    assert not any(f.blocking for f in found) and len(texts) == 3
    assert texts[0].startswith("SECURE_PROXY_SSL_HEADER is not set: nginx ends HTTPS")
    assert "('HTTP_X_FORWARDED_PROTO', 'https')" in texts[0]
    assert texts[1].startswith("SESSION_COOKIE_SECURE and CSRF_COOKIE_SECURE are off")
    assert texts[2].startswith("forms sent from https://app.test, https://www.app.test would be refused with "
                               "403 (CSRF verification failed): since Django 4.0")
    bare = only(readiness.server_findings(facts(csrf_trusted_origins=["app.test"])))
    assert bare.text.startswith("CSRF_TRUSTED_ORIGINS has entries without a scheme (app.test)")
    # Before Django 4.0 origins were bare names, and plain HTTP needs none of this.
    assert readiness.server_findings(facts(django="3.2.25", python="3.10", csrf_trusted_origins=["app.test"])) == []
    assert readiness.server_findings(facts(proxy_ssl_header=[], session_cookie_secure=False,
                                           DJANGO_HTTPS="0")) == []


def test_every_finding_is_one_line():
    broken = facts(debug=True, secret_key="code", allowed_hosts=[], static_root="/x", media_root="/y",
                   database={"engine": "django.db.backends.sqlite3"}, proxy_ssl_header=[], django="1.11.29",
                   static_url="/assets/", media_url="/uploads/", debug_source=FROM_ENV)
    found = readiness.server_findings(broken)
    assert len(found) >= 9 and all("\n" not in f.text for f in found)



# --- the URLs nginx serves the files at, before anything is migrated --------------------------------------------

@pytest.mark.parametrize("url, shown", [("/assets/", "STATIC_URL is '/assets/'"), ("/static/css/", "STATIC_URL "
                                        "is '/static/css/'"), ("", "STATIC_URL is not set"), ("/", "STATIC_URL is "
                                        "not set"), ("https://app.test/assets/", "STATIC_URL is 'https://app.test/"
                                                                                 "assets/'")])
def test_a_static_url_nginx_does_not_serve_blocks_and_says_the_one_it_does(url, shown):
    finding = only(readiness.server_findings(facts(static_url=url)))
    assert finding.blocking
    assert finding.text == (f"{shown}, but nginx serves the static files at /static/: every page's CSS, JS and "
                            "images would answer 404, so set STATIC_URL = '/static/' for production (`fab init` "
                            "writes a production settings module that does this)")


@pytest.mark.parametrize("url", ["/static/", "https://www.app.test/static/", "//app.test/static/",
                                 "https://cdn.example.net/assets/", "https://bucket.s3.amazonaws.com/static/"])
def test_the_static_url_nginx_serves_or_another_sites_is_fine(url):
    assert readiness.server_findings(facts(static_url=url)) == []


def test_a_media_url_nginx_does_not_serve_blocks_when_models_take_uploads():
    finding = only(readiness.server_findings(facts(media_url="/uploads/")))
    assert finding.blocking
    assert finding.text == ("MEDIA_URL is '/uploads/', but nginx serves uploaded files at /media/: every file your "
                            "models take (blog.Post.photo) would answer 404, so set MEDIA_URL = '/media/' for "
                            "production (`fab init` writes a production settings module that does this)")
    many = only(readiness.server_findings(facts(media_url="", uploads=["a.A.f", "b.B.g", "c.C.h", "d.D.i"])))
    assert many.blocking and many.text.startswith("MEDIA_URL is not set, but nginx serves uploaded files at "
                                                  "/media/: every file your models take (a.A.f, b.B.g, c.C.h, ...)")


def test_a_media_url_without_models_that_take_uploads_is_advice_and_django_s_default_is_nothing():
    for uploads in ([], None):  # none, or not known (the models could not be loaded)
        advice = only(readiness.server_findings(facts(media_url="/uploads/", uploads=uploads)))
        assert not advice.blocking and advice.text.startswith("MEDIA_URL is '/uploads/', but nginx serves "
                                                              "uploaded files at /media/")
        assert "so if it takes uploads set MEDIA_URL = '/media/'" in advice.text
        assert readiness.server_findings(facts(media_url="/", uploads=uploads)) == []
    assert readiness.server_findings(facts(media_url="/media/")) == []
    assert readiness.server_findings(facts(media_url="https://cdn.example.net/media/")) == []


def test_the_nginx_site_serves_the_locations_the_readiness_check_requires():
    from tasks.provisioning import nginx
    from tests.unit.test_templates import server
    conf = nginx.site_config(server(), tls=True, nginx_version=(1, 26, 0))
    assert f"\tlocation {readiness.STATIC_LOCATION} {{\n" in conf
    assert f"\tlocation {readiness.MEDIA_LOCATION} {{\n" in conf


@pytest.mark.parametrize("root", [RELEASE, f"{RELEASE}/mysite", f"{RELEASE}/"])
def test_a_static_root_that_holds_the_code_blocks(root):
    finding = only(readiness.server_findings(facts(static_root=root.rstrip("/"))))
    assert finding.blocking and finding.text.startswith(f"STATIC_ROOT is {root.rstrip('/')}, which holds your "
                                                        "code: collectstatic would mix the static files into it "
                                                        "and nginx would publish that directory")
    assert readiness.server_findings(facts(static_root=f"{RELEASE}/mysite_static")) == []


# --- DEBUG read from the environment ------------------------------------------------------------------------------

FROM_ENV = {"variables": [{"name": "DJANGO_DEBUG", "set": False}], "off": ["DJANGO_DEBUG", "False"]}


def test_debug_on_for_want_of_a_variable_names_it_and_the_fab_config_command():
    finding = only(readiness.server_findings(facts(debug=True, debug_source=FROM_ENV)))
    assert finding.blocking
    assert finding.text == (
        "DEBUG is on in production: your settings read it from the environment variable DJANGO_DEBUG, which the "
        "server does not set, and without it DEBUG is on, so error pages would show your code, settings and data "
        "to any visitor; turn it off with `fab config --set DJANGO_DEBUG=False` (the app's variables on the "
        "server are set with `fab config --set NAME=value`), or set DEBUG = False for production (`fab init` "
        "writes a production settings module that does this)")


def test_debug_turned_on_by_a_variable_says_to_unset_it_or_which_value_is_off():
    given = {"variables": [{"name": "DEBUG", "set": True}], "off": ["DEBUG", None]}
    finding = only(readiness.server_findings(facts(debug=True, debug_source=given)))
    assert finding.blocking and "environment variable DEBUG, which the app's environment sets so that DEBUG "                                 "is on" in finding.text
    assert "turn it off with `fab config --unset DEBUG` (and by taking it out of app.env in the inventory)"         in finding.text
    unknown = {"variables": [{"name": "APP_MODE", "set": False}], "off": None}
    text = only(readiness.server_findings(facts(debug=True, debug_source=unknown))).text
    assert "`fab config --set APP_MODE=VALUE` (the value your settings take for off)" in text


def test_init_says_which_variable_keeps_debug_off_and_how_the_apps_variables_are_set():
    assert readiness.debug_note(facts(debug_source=FROM_ENV)) == (
        "your settings read DEBUG from the environment variable DJANGO_DEBUG, which the server does not set, so "
        "DEBUG is off there; the app's variables on the server are set with `fab config --set NAME=value`: pin "
        "it off with `fab config --set DJANGO_DEBUG=False`, and never set it to turn DEBUG on in production")
    only_unset = {"variables": [{"name": "DJANGO_DEBUG", "set": False}], "off": ["DJANGO_DEBUG", None]}
    assert "leave DJANGO_DEBUG unset there" in readiness.debug_note(facts(debug_source=only_unset))
    in_app_env = {"variables": [{"name": "DJANGO_DEBUG", "set": True}], "off": ["DJANGO_DEBUG", "0"]}
    assert "which app.env in the inventory sets so that DEBUG is off" in readiness.debug_note(
        facts(debug_source=in_app_env))
    # Nothing to say: DEBUG not read from the environment, or on (then the finding above says it).
    assert readiness.debug_note(facts()) is None and readiness.debug_note(None) is None
    assert readiness.debug_note(facts(debug=True, debug_source=FROM_ENV)) is None
    assert readiness.server_findings(facts(debug_source=FROM_ENV)) == []

def test_compat_table():
    assert compat.runs_on((5, 1, 2), (3, 13)) is False and compat.runs_on((5, 1, 3), (3, 13))
    assert compat.runs_on((4, 2, 20), (3, 12)) and compat.runs_on((4, 2, 20), (3, 13)) is False
    assert compat.runs_on((9, 9), (3, 13)) is None
    assert compat.nearest_lts((3, 11), (1, 11)).name == "4.2"
    assert compat.nearest_lts((3, 13), (3, 2)).name == "5.2"
    assert compat.nearest_lts((3, 12), (5, 2)).name == "5.2"
    assert compat.requirement(compat.series((5, 1)), (3, 13)) == "Django>=5.1.3,<5.2"
    assert compat.django_requirement("Pillow\ndjango==1.11.29  # old\n") == ("django==1.11.29  # old", (1, 11, 29))
    assert compat.django_requirement("Django>=3.2,<4.0\n")[1] == (3, 2)
    assert compat.django_requirement("Django\n") == ("Django", None)
    assert compat.django_requirement("django-environ==0.11\n") is None
    assert compat.names_postgres_driver("psycopg2-binary==2.9.9\n") and not compat.names_postgres_driver("Django")
    assert compat.postgres_driver((3, 2)).startswith("psycopg2-binary")
