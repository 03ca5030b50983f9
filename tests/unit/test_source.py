"""Reading the project to ship from its git repository."""

import subprocess
import tarfile
import io

import pytest

from tasks.project import source
from tasks.inventory import Build


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


# --- the build step ---------------------------------------------------------------------------------------

BUILD = '''import pathlib, sys
out = pathlib.Path("static/dist")
out.mkdir(parents=True, exist_ok=True)
(out / "app.css").write_text("body{}" + (pathlib.Path("../README").read_text() if len(sys.argv) > 1 else ""))
(out / "fonts").mkdir(exist_ok=True)
(out / "fonts" / "a.woff2").write_bytes(b"font")
print("built", out)
'''


@pytest.fixture
def built(project):
    """The project with a build script; its output directory is ignored by git."""
    (project / "build.py").write_text(BUILD)
    (project / ".gitignore").write_text("static/dist/\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "a build")
    return project


def files(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_the_build_outputs_ship_although_git_ignores_them(built):
    echoed = []
    src = source.read(built, build=Build("python3 build.py with-readme", ("static/dist",)), echo=echoed.append)
    shipped = files(src.archive)
    # Run in a clean copy of the whole commit: it can read files above the project (the repository's README).
    assert shipped["static/dist/app.css"] == b"body{}outside the project\n"
    assert shipped["static/dist/fonts/a.woff2"] == b"font"
    assert {"manage.py", "requirements.txt", "build.py", ".gitignore"} <= set(shipped)
    assert echoed == ["built static/dist"]
    # The user's work tree is left alone: nothing was built there.
    assert not (built / "static").exists()
    assert subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=built, capture_output=True,
                          text=True).stdout == ""


def test_the_build_runs_on_the_commit_shipped_not_the_work_tree(built):
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=built, capture_output=True, text=True).stdout.strip()
    (built / "build.py").write_text(BUILD.replace("body{}", "main{}"))
    git(built, "commit", "-q", "-am", "main")
    build = Build("python3 build.py", ("static/dist",))
    assert files(source.read(built, ref=first, build=build).archive)["static/dist/app.css"] == b"body{}"
    assert files(source.read(built, build=build).archive)["static/dist/app.css"] == b"main{}"
    # Uncommitted changes ship only when allowed, and then the build runs them too, as shipped.
    (built / "build.py").write_text(BUILD.replace("body{}", "dirty{}"))
    assert files(source.read(built, allow_dirty=True, build=build).archive)["static/dist/app.css"] == b"dirty{}"


def test_built_outputs_replace_what_the_commit_has_there(built):
    (built / ".gitignore").write_text("")
    (built / "static" / "dist").mkdir(parents=True)
    (built / "static" / "dist" / "app.css").write_text("stale\n")
    (built / "static" / "dist" / "old.css").write_text("removed by the build\n")
    git(built, "add", "-A")
    git(built, "commit", "-q", "-m", "committed outputs")
    command = "rm -rf static/dist && python3 build.py"
    shipped = files(source.read(built, build=Build(command, ("static/dist",))).archive)
    assert shipped["static/dist/app.css"] == b"body{}" and "static/dist/old.css" not in shipped


def test_a_failing_build_is_refused_with_its_output(built):
    command = "echo compiling; echo 'Error: Cannot find module gulp' >&2; exit 3"
    with pytest.raises(source.SourceError) as error:
        source.read(built, build=Build(command, ("static/dist",)))
    text = str(error.value)
    assert text.startswith(f"the build command `{command}` failed with exit status 3, in a clean copy of commit ")
    assert "nothing was shipped" in text and "needs something that is not committed" in text
    assert text.endswith("Its last lines:\n    compiling\n    Error: Cannot find module gulp")
    with pytest.raises(source.SourceError, match="exit status 127: a program it calls is not installed"):
        source.read(built, build=Build("no-such-tool-here build", ("static/dist",)))


def test_a_missing_output_is_named(built):
    with pytest.raises(source.SourceError, match=r"succeeded but did not write static/build \(listed in "
                                                 r"app.build.outputs\)"):
        source.read(built, build=Build("python3 build.py", ("static/dist", "static/build")))


def test_a_build_that_hangs_is_stopped(built):
    with pytest.raises(source.SourceError, match="did not finish within 1 s"):
        source.read(built, build=Build("echo started; sleep 30 & sleep 30", ("static/dist",)), timeout=1)


@pytest.mark.parametrize("output", ["/etc", "../README", "static/../../README", "~/x", ""])
def test_output_paths_outside_the_project_are_refused(built, output):
    with pytest.raises(source.SourceError, match="must be a path inside the project"):
        source.read(built, build=Build("true", (output,)))


def test_outputs_that_lead_outside_through_links_are_refused(built, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("private")
    with pytest.raises(source.SourceError, match="static/dist leads outside the project"):
        source.read(built, build=Build(f"mkdir -p static && ln -s {secret} static/dist", ("static/dist",)))
    with pytest.raises(source.SourceError, match="static/dist/key is a symbolic link"):
        source.read(built, build=Build(f"mkdir -p static/dist && ln -s {secret}/key static/dist/key",
                                       ("static/dist",)))


def test_hostile_build_output_lines_are_only_printed(built, tmp_path):
    marker = tmp_path / "pwned"
    echoed = []
    source.read(built, build=Build(f"python3 build.py; echo '$(touch {marker})'; printf 'a\\033[2Jb\\n'",
                                   ("static/dist",)), echo=echoed.append)
    assert not marker.exists() and echoed[1] == f"$(touch {marker})"
