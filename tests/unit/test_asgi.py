"""ASGI (app.server: asgi): the inventory's keys, what provision renders for each server kind (the Gunicorn unit
and config, the nginx site with websocket upgrades), what a deploy adds to the requirements, the drift a change
of kind is refused with, and what `fab init` reads from a project that serves ASGI."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
import yaml

from tasks import defaults
from tasks.cli import init
from tasks.cli.deploy import extra_requirements
from tasks.inventory import App, Host, Inventory, InventoryError, parse
from tasks.project import source
from tasks.provisioning import Server, gunicorn, nginx, served
from tests.startproject import startproject
from tests.unit.test_init import run_init

HOSTILE = ["asgi\n", "ASGI", " asgi", "asgi; rm -rf /", "$(id)", "uvicorn", "wsgi%", "'asgi'", "", "asgi\x00"]


def load(**app):
    return parse({"app": {"name": "mysite", "domains": ["app.test"], **app},
                  "hosts": [{"address": "10.0.0.2"}]}, "inventory/x.yaml", Path("."))


def server(**app) -> Server:
    inv = load(**app)
    return Server(inv, inv.hosts[0], (), lambda: None)


# --- the inventory -------------------------------------------------------------------------------------------

def test_the_server_is_wsgi_unless_the_inventory_says_asgi():
    assert load().app.server == "wsgi" and load().app.module == "mysite.wsgi"
    app = load(server="asgi").app
    assert app.server == "asgi" and app.asgi == "mysite.asgi" and app.module == "mysite.asgi"
    app = load(server="asgi", asgi_module="project.routing", wsgi_module="project.wsgi").app
    assert app.module == "project.routing" and app.wsgi == "project.wsgi"
    assert load(asgi_module="project.routing").app.module == "mysite.wsgi"  # the module of the kind served


@pytest.mark.parametrize("value", HOSTILE)
def test_any_other_server_kind_is_refused_naming_both(value):
    with pytest.raises(InventoryError) as error:
        load(server=value)
    text = str(error.value)
    assert text.startswith("inventory/x.yaml: app.server: ") and "\n" not in text
    assert "use wsgi" in text and "or asgi" in text


@pytest.mark.parametrize("value", [True, 1, ["asgi"], {"asgi": 1}])
def test_a_server_kind_that_is_not_a_string_is_refused(value):
    with pytest.raises(InventoryError, match="app.server: must be a string"):
        load(server=value)


@pytest.mark.parametrize("value", ["mysite.asgi\n", "mysite.asgi;id", "$(id).asgi", "my site.asgi", "mysite..asgi",
                                   "mysite.asgi:application", "../asgi", "100%"])
def test_a_hostile_asgi_module_is_refused(value):
    with pytest.raises(InventoryError, match="app.asgi_module: .* must be a dotted Python module path"):
        load(server="asgi", asgi_module=value)


# --- what provision renders ------------------------------------------------------------------------------------

def test_the_wsgi_unit_and_config_are_as_before_and_asgi_adds_the_worker_class_and_module():
    wsgi_unit, asgi_unit = gunicorn.unit_file(server()), gunicorn.unit_file(server(server="asgi"))
    assert " mysite.wsgi:application\n" in wsgi_unit and " mysite.asgi:application\n" in asgi_unit
    assert wsgi_unit.replace("mysite.wsgi:", "mysite.asgi:") == asgi_unit  # the same socket, sandbox and limits
    wsgi_conf, asgi_conf = gunicorn.config_file(server()), gunicorn.config_file(server(server="asgi"))
    assert "worker_class" not in wsgi_conf
    namespace: dict = {}
    os.environ["RUNTIME_DIRECTORY"] = "/run/mysite/r1"
    exec(compile(asgi_conf, "gunicorn.conf.py", "exec"), namespace)
    assert namespace["worker_class"] == "uvicorn_worker.UvicornWorker" == defaults.UVICORN_WORKER_CLASS
    assert namespace["bind"] == "unix:/run/mysite/r1/gunicorn.sock"  # the same socket per release as WSGI
    # Uvicorn's workers are not recycled after N requests (one that is drops the connections it accepted but
    # had not read yet: nginx answers them 502); sync workers are, between requests.
    assert namespace["max_requests"] == 0 and "max_requests_jitter" not in namespace
    wsgi_namespace: dict = {}
    exec(compile(wsgi_conf, "gunicorn.conf.py", "exec"), wsgi_namespace)
    assert wsgi_namespace["max_requests"] == 2000 and wsgi_namespace["max_requests_jitter"] == 200
    assert "mysite.asgi with Uvicorn workers" in gunicorn.service(server(server="asgi")).note
    assert "mysite.wsgi with sync workers" in gunicorn.service(server()).note


@pytest.mark.parametrize("tls", [True, False])
def test_the_asgi_site_passes_websocket_upgrades_and_keeps_everything_else(tls):
    wsgi = nginx.site_config(server(), tls=tls, nginx_version=(1, 26, 0))
    asgi = nginx.site_config(server(server="asgi"), tls=tls, nginx_version=(1, 26, 0))
    assert "Upgrade" not in wsgi and "proxy_http_version" not in wsgi and "map " not in wsgi
    assert asgi.count("map $http_upgrade $mysite_connection_upgrade {") == 1
    assert re.search(r'map \$http_upgrade \$mysite_connection_upgrade \{\n\tdefault upgrade;\n\t"" close;\n\}', asgi)
    # The map is in nginx's http context: before any server block.
    assert asgi.index("map $http_upgrade") < asgi.index("server {")
    location = asgi[asgi.rindex("\tlocation / {"):]  # the app's (with TLS, the first one redirects)
    location = location[:location.index("\n\t}\n")]
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $mysite_connection_upgrade;", "proxy_read_timeout 60s;",
                 "include /etc/gangway/mysite/backend.conf;", "proxy_set_header X-Forwarded-Proto $scheme;"):
        assert line in location, line
    # Nothing else changes: the headers, redirects, static files and maintenance pages are the WSGI site's.
    added = {line for line in asgi.splitlines()} - {line for line in wsgi.splitlines()}
    assert all(line.strip().startswith(("#", "map ", "default upgrade", '"" close', "}", "proxy_http_version",
                                         "proxy_set_header Upgrade", "proxy_set_header Connection"))
               or not line.strip() for line in added), added
    assert ("return 301 https://$host$request_uri;" in asgi) == tls


def test_two_asgi_apps_on_one_server_define_different_variables():
    one = nginx.site_config(server(server="asgi"), tls=True, nginx_version=(1, 26, 0))
    inv = parse({"app": {"name": "shop_2", "domains": ["shop.test"], "server": "asgi"},
                 "hosts": [{"address": "10.0.0.2"}]}, "x", Path("."))
    other = nginx.site_config(Server(inv, inv.hosts[0], (), lambda: None), tls=True, nginx_version=(1, 26, 0))
    assert "$shop_2_connection_upgrade" in other and "$shop_2_connection_upgrade" not in one


# --- what a deploy installs ----------------------------------------------------------------------------------

def test_wsgi_adds_only_gunicorn_as_before_and_asgi_adds_uvicorn_and_its_worker():
    assert extra_requirements(b"Django>=5.2\n", "wsgi") == [defaults.GUNICORN]
    assert extra_requirements(b"Django>=5.2\ngunicorn==23.0.0\n", "wsgi") == []
    assert extra_requirements(b"Django>=5.2\n", "asgi") == [defaults.GUNICORN, defaults.UVICORN_WORKER,
                                                             defaults.UVICORN]
    named = b"Django\nGunicorn>=23\nuvicorn-worker==0.4.0\nuvicorn[standard]==0.35\n"
    assert extra_requirements(named, "asgi") == []
    # uvicorn-worker is not uvicorn, nor gunicorn-something gunicorn: each is added when only the other is named.
    assert extra_requirements(b"gunicorn\nuvicorn_worker\n", "asgi") == [defaults.UVICORN]
    assert extra_requirements(b"gunicorn\nuvicorn\n", "asgi") == [defaults.UVICORN_WORKER]
    assert extra_requirements(b"gunicorn-extras\n", "wsgi") == [defaults.GUNICORN]


def test_a_change_of_server_kind_builds_another_environment():
    requirements = b"Django>=5.2\n"
    hashes = {kind: source.requirements_hash(requirements, "3.13", " ".join(extra_requirements(requirements, kind)))
              for kind in defaults.SERVERS}
    assert hashes["wsgi"] != hashes["asgi"]
    assert hashes["wsgi"] == source.requirements_hash(requirements, "3.13", defaults.GUNICORN)  # as before


# --- the deploy's drift check ----------------------------------------------------------------------------------

def inventory(**app) -> Inventory:
    return Inventory(dataclasses.replace(App("mysite", domains=("app.test",)), **app), (Host("10.0.0.2"),))


def test_switching_to_asgi_is_refused_until_a_provision_naming_the_keys():
    differ = served.drift(inventory(server="asgi"), served.as_provisioned(inventory()))
    assert [(d.name, d.keys) for d in differ] == [("Gunicorn unit", ("app.asgi_module",)),
                                                  ("Gunicorn config", ("app.server",)),
                                                  ("nginx site", ("app.server",))]
    text = served.refusal(inventory(server="asgi"), differ)
    assert "`app.asgi_module` and `app.server` changed since the last `fab provision`" in text
    back = served.drift(inventory(), served.as_provisioned(inventory(server="asgi")))
    assert [d.keys for d in back] == [("app.wsgi_module",), ("app.server",), ("app.server",)]


def test_an_asgi_module_change_is_named_and_the_same_asgi_inventory_has_no_drift():
    asgi = inventory(server="asgi")
    assert served.drift(asgi, served.as_provisioned(asgi)) == []
    differ = served.drift(inventory(server="asgi", asgi_module="mysite.routing"), served.as_provisioned(asgi))
    assert [(d.name, d.keys) for d in differ] == [("Gunicorn unit", ("app.asgi_module",))]
    # The WSGI module is not what an ASGI site serves: changing it changes nothing there.
    assert served.drift(inventory(server="asgi", wsgi_module="other.wsgi"), served.as_provisioned(asgi)) == []


# --- fab init ------------------------------------------------------------------------------------------------

CHANNELS_SETTINGS = '''
INSTALLED_APPS = ["channels"] + INSTALLED_APPS
ASGI_APPLICATION = "mysite.routing.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                              "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://localhost")]}}}
'''
FLAGS = init.Answers(host="192.0.2.10", domains=("chat.test",), email="me@chat.test")


def project(tmp_path: Path, settings: str = "", requirements: str | None = None) -> Path:
    directory = startproject(tmp_path / "chat")
    path = directory / "mysite" / "settings.py"
    path.write_text("import os\n" + path.read_text() + settings)
    if requirements is not None:
        (directory / "requirements.txt").write_text(requirements)
    return directory


def written_app(directory: Path) -> dict:
    return yaml.safe_load((directory / "deploy" / "production.yaml").read_text())["app"]


def test_init_writes_asgi_for_a_channels_project_and_names_redis(tmp_path):
    directory = project(tmp_path, CHANNELS_SETTINGS, "Django>=5.2,<5.3\nchannels>=4\nchannels-redis>=4\n")
    outcome, out = run_init(directory, FLAGS)
    app = written_app(directory)
    assert app["server"] == "asgi" and app["asgi_module"] == "mysite.routing", app
    loaded = init.inv.load(str(directory / "deploy" / "production.yaml")).app
    assert loaded.module == "mysite.routing"
    assert ("  server    asgi: your settings set ASGI_APPLICATION = mysite.routing.application and Channels is "
            "in INSTALLED_APPS, so Gunicorn runs mysite.routing with Uvicorn's workers") in out, out
    assert "# ASGI: your settings set ASGI_APPLICATION" in (directory / "deploy/production.yaml").read_text()
    assert ("  redis     your CHANNEL_LAYERS use Redis (channels_redis.core.RedisChannelLayer): `services: "
            "[redis]`") in out and "REDIS_URL" in out


def test_init_reads_channels_from_the_requirements_and_keeps_the_default_module(tmp_path):
    directory = project(tmp_path, requirements="Django>=5.2,<5.3\nchannels==4.2\n")
    _, out = run_init(directory, FLAGS)
    app = written_app(directory)
    assert app["server"] == "asgi" and "asgi_module" not in app and "wsgi_module" not in app, app
    assert "asgi: your requirements name channels, so Gunicorn runs mysite.asgi" in out, out
    assert "  redis " not in out


def test_a_plain_project_stays_wsgi_though_it_has_an_asgi_py(tmp_path):
    directory = project(tmp_path, requirements="Django>=5.2,<5.3\nchannels-redis-only-in-name>=1\n")
    assert (directory / "mysite" / "asgi.py").is_file()
    _, out = run_init(directory, FLAGS)
    assert "server" not in written_app(directory) and "asgi" not in out
    assert init.inv.load(str(directory / "deploy" / "production.yaml")).app.server == "wsgi"


def test_an_existing_wsgi_inventory_is_kept_and_told_about_asgi(tmp_path):
    directory = project(tmp_path, requirements="Django>=5.2,<5.3\n")
    run_init(directory, FLAGS)
    settings = directory / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + 'ASGI_APPLICATION = "mysite.asgi.application"\n')
    _, out = run_init(directory, FLAGS)
    assert "server" not in written_app(directory)
    assert ("note      your settings set ASGI_APPLICATION = mysite.asgi.application, but deploy/production.yaml "
            "serves WSGI: set app.server: asgi there (and app.asgi_module: mysite.asgi)") in out, out


def test_settings_that_cannot_be_read_here_are_searched_for_asgi_application(tmp_path):
    directory = project(tmp_path, 'ASGI_APPLICATION = "mysite.routing.application"\n')
    found = init.projects.find(directory)
    assert init.asgi_server(found, None, None) == init.Asgi(
        "mysite.routing", "your settings set ASGI_APPLICATION = mysite.routing.application")
    assert init.asgi_server(found, {"asgi_application": "", "channels": False}, "Django\n") is None


@pytest.mark.parametrize("value", ["mysite.asgi.application\n# x: 1", "$(id).application", "x y.application"])
def test_a_hostile_asgi_application_is_not_copied_into_the_inventory(tmp_path, value):
    found = init.projects.find(project(tmp_path))
    asgi = init.asgi_server(found, {"asgi_application": value, "channels": False,
                                    "channel_layers": ["redis\nx", "channels_redis.core.RedisChannelLayer"]}, None)
    assert asgi == init.Asgi("mysite.asgi", "your settings set ASGI_APPLICATION",
                             ("channels_redis.core.RedisChannelLayer",))
    text = init.inventory_text(init.Answers(name="mysite"), found, None, asgi)
    assert yaml.safe_load(text)["app"]["server"] == "asgi" and "$(id)" not in text and "x y" not in text
