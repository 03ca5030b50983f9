"""Who is who on the server.

- the deploy user: you (and fab) log in as it with your key, and it administers the server with sudo;
- the app user: runs Gunicorn and owns only what the app must write (media); it cannot log in;
- the build user: runs pip, Django's checks and collectstatic for a new release; it has no sudo, cannot log
  in, and owns only the release being built (and its new venv) until the release is sealed;
- www-data (nginx) joins the app's group, so it may connect to Gunicorn's socket.
"""

from __future__ import annotations

from ..layout import ACME_WEBROOT, CONFIG_ROOT
from . import Server
from ..commands.render import render
from ..commands.shell import q
from ..facts.steps import Change, Check, Directory, File, Probe, Step


def _account_probe(name: str) -> Probe:
    """Whether the user exists, and its groups."""
    return Probe(f"user:{name}", f"id -nG {q(name)}", lambda out, rc: set(out.split()) if rc == 0 else None)


def _create_user(name: str, command: str):
    def decide(groups, facts) -> list[Change]:
        return [] if groups is not None else [Change(f"user {name} created", (command,))]
    return decide


def deploy_user(server: Server) -> Step:
    user = server.inventory.deploy_user
    home = f"/home/{user}"
    keys = "".join(f"{k.strip()}\n" for k in server.public_keys)
    create = f"useradd --create-home --home-dir {q(home)} --shell /bin/bash --user-group {q(user)}"
    return Step(f"deploy user {user}", [
        Check(_account_probe(user), _create_user(user, create)),
        Directory(f"{home}/.ssh", "700", user, user),
        File(f"{home}/.ssh/authorized_keys", keys, "600", user, user),
        File(f"/etc/sudoers.d/gangway-{user}", render("sudo/deploy.j2", user=user), "440"),
    ], validate="visudo -c -q", note=f"logs in with {len(server.public_keys)} key(s), sudo")


def app_user(server: Server) -> Step:
    app = server.inventory.app.name
    layout = server.layout
    create = (f"useradd --system --user-group --home-dir {q(layout.root)} --no-create-home "
              f"--shell /usr/sbin/nologin {q(app)}")

    def nginx_in_group(groups, facts) -> list[Change]:
        if groups is None or app in groups:
            return []
        return [Change(f"www-data joined group {app}", (f"usermod -aG {q(app)} www-data",))]

    return Step(f"app user {app}", [
        Check(_account_probe(app), _create_user(app, create)),
        Check(_account_probe("www-data"), nginx_in_group),
    ], note="no login, no sudo; nginx may reach its socket")


def build_user(server: Server) -> Step:
    name = server.layout.build_user
    create = (f"useradd --system --user-group --home-dir /nonexistent --no-create-home "
              f"--shell /usr/sbin/nologin {q(name)}")
    return Step(f"build user {name}", [Check(_account_probe(name), _create_user(name, create))],
                note="no login, no sudo; builds releases, owns nothing once they are sealed")


def directories(server: Server) -> Step:
    layout = server.layout
    app, deploy = server.inventory.app.name, server.inventory.deploy_user
    if not server.runs_app:
        return _server_layout(server)
    return Step("release layout", [
        Directory(layout.root, "755"),
        Directory(layout.releases, "755", deploy, deploy),  # deploy uploads here; each release is sealed
        Directory(layout.shared, "755", deploy, deploy),
        Directory(layout.media, "755", app, app),
        Directory(layout.venvs, "755"),
        Directory(layout.failed, "755"),
        Directory(layout.static, "755"),
        # nginx (www-data) may look up the maintenance flag in state/, not list or read what else is there.
        Directory(layout.state, "710", deploy, "www-data"),
        Directory(layout.backups, "700"),
        Directory(layout.placeholder, "755"),
        Directory(CONFIG_ROOT, "755"),
        Directory(layout.config_dir, "755"),
        Directory(ACME_WEBROOT, "755"),
    ], note=f"{layout.root}: releases/, shared/, media owned by {app}")


def _server_layout(server: Server) -> Step:
    """A server of several that runs no app: its deploy lock in state/ and gangway's config for it; on the
    load balancer its pages, the maintenance flag (in state/, which nginx may look up) and the ACME webroot;
    on the db host the backups."""
    layout, deploy = server.layout, server.inventory.deploy_user
    lb, db = server.has("lb"), server.has("db")
    return Step("server layout", [
        Directory(layout.root, "755"),
        Directory(layout.state, "710", deploy, "www-data" if lb else deploy),
        *([Directory(layout.placeholder, "755"), Directory(ACME_WEBROOT, "755")] if lb else []),
        *([Directory(layout.backups, "700")] if db else []),
        Directory(CONFIG_ROOT, "755"),
        Directory(layout.config_dir, "755"),
    ], note=f"{layout.root}: state/ (the deploy lock" + (", the maintenance flag) and pages/" if lb else ")")
        + (f", backups/ (the dumps); {layout.config_dir}/ (TLS, pg_hba, the role's password)" if db else ""))
