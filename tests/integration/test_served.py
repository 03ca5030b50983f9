""""Deployed" means visitors get the new release: the djangogirls story on a real server.

There, a first deploy failed at the static-files gate after it had rewritten nginx's backend include to
proxy to the live link, and nginx was never reloaded. The deploys after it checked the release on its own
socket and said "deployed ... healthy", `fab status` accepted the placeholder page's 200 through nginx, and
every visitor got the placeholder page. Here the first deploy must leave nginx and its include in agreement,
and a deploy, a rollback and `fab status` must each prove, through nginx by the site's name, which release
answered.

Runs on a Debian 13 server of its own: the story starts with a first deploy, on a server that has never
served a release.
"""

from __future__ import annotations

import base64

import pytest

from tasks.commands import release as commands
from tasks.layout import Layout
from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import APP, provision_fresh

BACKEND = Layout(APP).nginx_backend


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = provision_fresh("trixie", tmp_path_factory)
    yield server
    server.host.stop()


@pytest.fixture(scope="module")
def site(server, tmp_path_factory) -> Site:
    return make_site(server, tmp_path_factory, "served")


def _write_backend(site: Site, content: str) -> None:
    """Write nginx's backend include by hand, without reloading nginx (as gangway before this fix did)."""
    encoded = base64.b64encode(content.encode()).decode()
    site.root(f"printf %s {encoded} | base64 -d > {BACKEND}")


def _status(site: Site):
    return site.fab("status", check=False)


def test_a_first_deploy_failing_at_the_static_gate_then_good_deploys_serve_the_release(site):
    placeholder = site.get("/version/")
    assert placeholder.status == 200 and "ready for its first deploy" in placeholder.body, placeholder.body[:300]
    placeholder_backend = site.root(f"cat {BACKEND}")

    # 1. A first deploy whose static files nginx cannot read (collected owner-only, a storage option readiness
    # does not judge): it fails at the static gate, the last check before traffic moves, after migrating.
    good = site.repo.git("rev-parse", "HEAD")
    settings = (site.repo.path / "mysite/settings.py").read_text()
    manifest = '"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",'
    assert manifest in settings
    site.repo.commit("static files collected owner-only", **{
        "mysite__settings.py": settings.replace(manifest, manifest + ' "OPTIONS": {"file_permissions_mode": 0o600},')})
    try:
        failed = site.deploy(check=False)
    finally:
        site.repo.reset(good)
    assert failed.returncode != 0 and "its static files would not be served" in failed.stderr, failed.stderr
    # nginx and its include agree: the include was not touched, and the site shows the placeholder page.
    assert site.root(f"cat {BACKEND}") == placeholder_backend
    assert site.get("/version/").body == placeholder.body

    # 2. What the djangogirls server had: the include says "proxy to the live link", nginx never loaded it.
    _write_backend(site, commands.backend_conf(Layout(APP)))
    assert site.get("/version/").body == placeholder.body

    # 3. A good deploy finds nginx serving the placeholder page, reloads it, and proves the release answers.
    out = site.deploy()
    release = deployed_id(out)
    assert "(nginx was serving something else: it is reloaded now)" in out.stdout, out.stdout
    assert f"through nginx as app.test -> 200, from {release}" in out.stdout, out.stdout
    assert site.answering().endswith(release)
    status = _status(site)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"/healthz/ through nginx on the server -> 200, from {release}" in status.stdout, status.stdout

    # Visitors never see which release answered (a release id names the commit), and keep the server's
    # security headers in the proxied location.
    visitor = site.get("/version/")
    assert visitor.header(commands.RELEASE_HEADER) is None, visitor.headers
    assert visitor.header("strict-transport-security") and visitor.header("x-content-type-options")

    # 4. nginx serves the placeholder page again while the include says otherwise: the placeholder's 200 is no
    # longer "all well", and the next deploy repairs it.
    _write_backend(site, placeholder_backend)
    site.root("systemctl reload nginx && sleep 1")
    _write_backend(site, commands.backend_conf(Layout(APP)))
    assert site.get("/healthz/").status == 200  # what the old check accepted
    status = _status(site)
    assert status.returncode == 2, status.stdout
    assert (f"-> 200, but from no release: nginx serves the placeholder page (or a config that does not proxy "
            f"to the live link), not {release}: run `fab deploy` (it repairs nginx)") in status.stdout, status.stdout
    site.repo.set_version("repaired")
    out = site.deploy()
    repaired = deployed_id(out)
    assert "(nginx was serving something else: it is reloaded now)" in out.stdout, out.stdout
    assert site.answering() == f"repaired {repaired}"
    assert _status(site).returncode == 0

    # 5. A switch on a server whose nginx serves through the live link does not reload nginx.
    pid = site.root("cat /run/nginx.pid").strip()
    workers = site.root(f"pgrep -P {pid} | sort").split()
    back = site.rollback()
    assert f"rolled back to {release}" in back.stdout and "reloaded now" not in back.stdout, back.stdout
    assert f"through nginx as app.test -> 200, from {release}" in back.stdout, back.stdout
    assert site.root(f"pgrep -P {pid} | sort").split() == workers, "the switch reloaded nginx"
    assert site.answering().endswith(release)
