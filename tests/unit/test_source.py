"""Reading the project to ship from its git repository."""

import subprocess
import tarfile
import io

import pytest

from tasks import source


def git(path, *args):
    subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@t", *args], cwd=path, check=True,
                   capture_output=True)


@pytest.fixture
def project(tmp_path):
    """A repository whose Django project lives in a subdirectory, as many do."""
    root = tmp_path / "repo"
    app = root / "web"
    app.mkdir(parents=True)
    (app / "manage.py").write_text("# manage\n")
    (app / "requirements.txt").write_text("Django>=5.2\n")
    (root / "README").write_text("outside the project\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    return app


def names(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name.lstrip("./") for m in tar.getmembers() if m.isfile()}


def test_the_project_directory_at_the_commit_is_packed(project):
    src = source.read(project)
    assert names(src.archive) == {"manage.py", "requirements.txt"} and src.requirements == b"Django>=5.2\n"
    assert len(src.commit) == 40 and not src.dirty


def test_uncommitted_changes_are_refused_unless_allowed(project):
    (project / "manage.py").write_text("# changed\n")
    with pytest.raises(source.SourceError, match="uncommitted changes.*--allow-dirty"):
        source.read(project)
    src = source.read(project, allow_dirty=True)
    assert src.dirty
    with tarfile.open(fileobj=io.BytesIO(src.archive)) as tar:
        assert tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("manage.py"))).read() == \
            b"# changed\n"
    assert (project / "manage.py").read_text() == "# changed\n"  # the work tree is left alone


def test_clear_errors_for_a_wrong_ref_no_requirements_no_manage_py_no_git(project, tmp_path):
    with pytest.raises(source.SourceError, match="'v9' is not a commit, branch or tag"):
        source.read(project, ref="v9")
    with pytest.raises(source.SourceError, match="reqs.txt is not in commit"):
        source.read(project, requirements_file="reqs.txt")
    with pytest.raises(source.SourceError, match="has no manage.py"):
        source.read(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "manage.py").write_text("")
    with pytest.raises(source.SourceError, match="not in a git repository"):
        source.read(plain)


def test_the_venv_hash_changes_with_requirements_python_or_extras():
    base = source.requirements_hash(b"Django\n", "3.13.5", "")
    assert base == source.requirements_hash(b"Django\n", "3.13.5", "")
    assert len({base, source.requirements_hash(b"Django\nsix\n", "3.13.5", ""),
                source.requirements_hash(b"Django\n", "3.11.2", ""),
                source.requirements_hash(b"Django\n", "3.13.5", "gunicorn")}) == 4
