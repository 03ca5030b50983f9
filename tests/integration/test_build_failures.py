"""A local build step for front-end assets, and failures that teach, on the shared Debian 13 server.

The project's build command runs on this machine in a clean copy of the commit; its outputs (ignored by git)
ship with the release and are served by nginx. A Django too old for the server's Python, and a pin with no
release for it, fail with a headline naming the gate, the decisive line first, a hint naming the server's
Python, and the path of the gate's full output on the server, while the live release keeps serving.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import APP

BUILD_SCRIPT = '''"""Stands in for npm/gulp: writes the site's stylesheet into the app's static files."""
from pathlib import Path

out = Path("counter/static/counter/dist")
out.mkdir(parents=True, exist_ok=True)
(out / "app.css").write_text("/* built by build_assets.py */ body { color: rebeccapurple; }\\n")
print("wrote", out / "app.css")
'''
OUTPUT = "counter/static/counter/dist"
GOOD_REQUIREMENTS = "Django>=5.2,<5.3\ngunicorn>=23,<24\npsycopg[binary]>=3.2,<4\n"


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    site = make_site(trixie, tmp_path_factory, "build",
                     build={"command": "python3 build_assets.py", "outputs": [OUTPUT]})
    site.repo.commit("a front-end build step", **{
        "build_assets.py": BUILD_SCRIPT,
        ".gitignore": (site.repo.path / ".gitignore").read_text() + "dist/\n"})
    return site


@pytest.fixture(scope="module")
def live(site) -> dict:
    """The release that went live first, which the failed deploys below must leave serving."""
    return {}


def failed_deploy(site: Site) -> tuple[str, str]:
    """Deploy a commit that must fail: (the error message, the failed release's id)."""
    out = site.deploy(check=False)
    assert out.returncode != 0, out.stdout
    message = out.stderr[out.stderr.index("deploy failed: "):].strip()
    release = re.search(r"release (\S+): ", message)
    assert release, message
    return message, release.group(1)


def assert_teaches(message: str, release: str, headline: str, decisive: str) -> str:
    """The headline first, then the decisive line, then the tail; the log named and kept: returns the log."""
    lines = message.splitlines()
    assert headline in lines[0], message
    assert decisive in lines[1], message
    assert message.index(decisive) < message.index("Its last lines:"), message
    log = f"/srv/{APP}/failed/{release}/.gangway/build.log"
    assert log in message, message
    return log


def test_built_assets_ship_with_the_release_and_answer_over_https(site, live):
    out = site.deploy()
    live["release"] = release = deployed_id(out)
    assert "build: `python3 build_assets.py`" in out.stdout and "wrote counter/static/counter/dist/app.css" in out.stdout
    css = site.get("/static/counter/dist/app.css")
    assert css.status == 200 and "rebeccapurple" in css.body and "text/css" in css.header("content-type")
    # Built in a clean copy of the commit: the work tree has no outputs, and git still tracks none.
    assert not (site.repo.path / OUTPUT).exists()
    assert site.answering().endswith(release)


def test_a_django_too_old_for_the_servers_python_names_the_gate_and_the_versions_that_run(site, live):
    good = site.repo.git("rev-parse", "HEAD")
    site.repo.commit("Django 1.11, as in 2018", **{"requirements.txt": GOOD_REQUIREMENTS.replace(
        "Django>=5.2,<5.3", "Django==1.11.29")})
    try:
        message, release = failed_deploy(site)
    finally:
        site.repo.reset(good)
    print(message)
    log = assert_teaches(message, release, "the project could not be imported",
                         "No module named 'django.utils.six")
    hint = next(line for line in message.splitlines() if line.startswith("hint: "))
    assert "Django 1.11.29" in hint and "Python 3.13" in hint and "5.2 LTS" in hint, message
    assert "Couldn't import Django" in message  # the tail still shows how it ended
    assert site.root(f"stat -c '%a %U' {log}").strip() == "600 root"
    full = site.root(f"cat {log}")
    assert "Traceback (most recent call last)" in full and "django/utils/encoding.py" in full
    print(full)
    assert site.answering().endswith(live["release"])  # the live release untouched


def test_a_pin_with_no_release_for_the_servers_python_fails_at_uv_naming_it(site, live):
    good = site.repo.git("rev-parse", "HEAD")
    # Wheels for Python 3.7 to 3.10 only, and no source to build one from.
    site.repo.commit("a pin from 2022", **{"requirements.txt": GOOD_REQUIREMENTS + "tensorflow==2.10.0\n"})
    try:
        message, release = failed_deploy(site)
    finally:
        site.repo.reset(good)
    print(message)
    log = assert_teaches(message, release, "uv could not install the requirements",
                         "Because tensorflow==2.10.0 has no wheels with a matching Python ABI tag (e.g., `cp313`)")
    hint = next(line for line in message.splitlines() if line.startswith("hint: "))
    assert "tensorflow==2.10.0 publishes ready-made wheels only for other Pythons (cp37m" in hint, message
    assert "Python 3.13" in hint, message
    assert "tensorflow==2.10.0" in site.root(f"cat {log}")
    assert site.answering().endswith(live["release"])


def test_a_pin_that_fails_to_build_from_source_names_it_and_where_its_build_stopped(site, live):
    good = site.repo.git("rev-parse", "HEAD")
    # No wheel for Python 3.13, and its setup.py fails under Cython 3.
    site.repo.commit("an old PyYAML", **{"requirements.txt": GOOD_REQUIREMENTS + "PyYAML==5.4.1\n"})
    try:
        message, release = failed_deploy(site)
    finally:
        site.repo.reset(good)
    print(message)
    assert_teaches(message, release, "uv could not install the requirements", "Failed to build `pyyaml==5.4.1`")
    hint = next(line for line in message.splitlines() if line.startswith("hint: "))
    assert hint.startswith("hint: PyYAML==5.4.1 (from your requirements) has no ready-made wheel for Python 3.13, "
                           "the server's Python, so uv tried to build it from source on the server, and that "
                           "failed ("), message
    assert site.answering().endswith(live["release"])
    # The next good deploy goes through.
    assert deployed_id(site.deploy())
