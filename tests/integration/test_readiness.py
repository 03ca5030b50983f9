"""The readiness check on a real server: settings that would break the site stop the release before
collectstatic and migrations, with the fix in the message, and the live release keeps serving.

Runs on the shared provisioned Debian 13 server with its own copy of the example app.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.appsite import GOOD_MIGRATION, Site, deployed_id, make_site


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    site = make_site(trixie, tmp_path_factory, "readiness")
    site.deploy()
    return site


def _refused(site: Site, settings_tail: str, **files: str) -> list[str]:
    """Deploy the example app with `settings_tail` added to its settings: the deploy must fail at the readiness
    gate, the live release keep serving; the repository is put back. Returns the blocking findings, which the
    message shows first, each on its own line, after its headline and before the log's path."""
    before, good = site.answering(), site.repo.git("rev-parse", "HEAD")
    settings = (site.repo.path / "mysite/settings.py").read_text()
    site.repo.commit("settings not ready", **{"mysite__settings.py": settings + settings_tail, **files})
    try:
        out = site.deploy(check=False)
    finally:
        site.repo.reset(good)
    assert out.returncode != 0, out.stdout
    assert site.answering() == before, "the live release must keep serving"
    message = out.stderr[out.stderr.index("deploy failed: "):].strip()
    headline, *lines = message.splitlines()
    assert re.search(r"release \S+: the settings are not ready for production; \S+ is still serving\. Kept in "
                     r"/srv/\S+/failed/\.$", headline), message
    findings = [line for line in lines if line.startswith("  - ")]
    assert findings and lines[:len(findings)] == findings, message  # every finding first
    assert lines[len(findings)].startswith("The gate's full output is kept on the server in "), message
    return findings


def test_the_example_app_deploys_with_nothing_blocking(site):
    out = site.deploy()
    release = deployed_id(out)
    assert site.answering().endswith(release)
    assert "not ready for production" not in out.stdout + out.stderr


def test_a_static_root_outside_the_release_is_refused_before_migrations_with_the_fix(site):
    (finding,) = _refused(site, '\nSTATIC_ROOT = "/srv/elsewhere/static"\n',
                          **{"counter__migrations__0002_hit_agent.py": GOOD_MIGRATION})
    assert "STATIC_ROOT is /srv/elsewhere/static, outside the project" in finding
    assert "os.environ.get('DJANGO_STATIC_ROOT'" in finding
    assert site.sql("select count(*) from django_migrations where name = '0002_hit_agent'") == "0"
    assert "elsewhere" not in site.root("ls /srv")


def test_debug_hard_coded_on_and_hosts_not_covered_are_both_refused_in_one_message(site):
    findings = _refused(site, "\nDEBUG = True\nALLOWED_HOSTS = ['elsewhere.invalid']\n")
    assert len(findings) == 2, findings
    debug = next(line for line in findings if "DEBUG is on in production" in line)
    assert "DEBUG = False" in debug
    assert any("ALLOWED_HOSTS is ['elsewhere.invalid'], which does not cover" in line for line in findings)


def test_findings_that_do_not_block_are_listed_one_per_line_and_the_release_goes_live(site):
    good = site.repo.git("rev-parse", "HEAD")
    settings = (site.repo.path / "mysite/settings.py").read_text()
    site.repo.commit("a secret key in the code", **{
        "mysite__settings.py": settings + f'\nSECRET_KEY = "{"k3y-in-the-code-" * 4}"\n'})
    try:
        out = site.deploy()
    finally:
        site.repo.reset(good)
    assert site.answering().endswith(deployed_id(out))
    assert ("  ok        readiness: 1 thing(s) to improve in the settings:\n"
            "            - SECRET_KEY is written in your settings instead of read from the server's environment"
            in out.stdout), out.stdout
    site.deploy()
