"""The beginner projects in tests/data are sound: each passes Django's checks and serves its home page from
its own SQLite database with the installed Django, as `runserver` does on its author's laptop."""

import html
import json
import subprocess
import sys

import pytest

from tests.beginners import BLOG, PROJECTS, Beginner

# Django's test client inside the project (setup_test_environment lets it past any ALLOWED_HOSTS), reading
# the project's own database; the answer is the last line of output.
GET = """
import json
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
response = Client().get({path!r})
body = b"".join(response.streaming_content) if response.streaming else response.content
print(json.dumps([response.status_code, body.decode("utf-8", "replace")]))
"""


def manage(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=project, capture_output=True, text=True,
                          timeout=120)


def get(project, path: str) -> tuple[int, str]:
    """The status and page (HTML entities decoded) that the project answers at PATH."""
    done = manage(project, "shell", "--command", GET.format(path=path))
    assert done.returncode == 0, done.stderr
    status, page = json.loads(done.stdout.splitlines()[-1])
    return status, html.unescape(page)


@pytest.mark.parametrize("beginner", PROJECTS, ids=lambda b: b.directory)
def test_the_project_passes_checks_and_shows_its_database(beginner: Beginner, tmp_path):
    project = beginner.copy(tmp_path / beginner.directory)
    assert not (project / "requirements.txt").exists()
    checked = manage(project, "check")
    assert checked.returncode == 0, checked.stderr

    status, page = get(project, beginner.home)
    assert status == 200, page
    for text in beginner.shown:
        assert text in page
    for text in beginner.hidden:
        assert text not in page
    assert beginner.static in page


def test_the_blog_shows_the_logo_kept_in_its_media_folder(tmp_path):
    project = BLOG.copy(tmp_path / "blog")
    assert (project / "media" / "images" / "logo.png").read_bytes().startswith(b"\x89PNG")
    assert get(project, "/media/images/logo.png")[0] == 200
    assert 'src="/media/images/logo.png"' in get(project, "/")[1]
