"""Operations: from probe output to the commands that close the difference, without a server."""

import hashlib
import subprocess


from tasks.commands import shell
from tasks.connection.remote import parse_sections
from tasks.facts.steps import (Absent, Directory, File, FileIfAbsent, Link, Packages, PathState, Step,
                         parse_path_state, path_probe)


def state(content=None, kind="regular file", mode="644", owner="root", group="root", target=None):
    sha = hashlib.sha256(content.encode()).hexdigest() if content is not None else None
    return PathState(kind, mode, owner, group, sha, target)


def test_path_probe_output_is_parsed_for_files_dirs_links_and_absence():
    assert parse_path_state("absent\n", 0) is None
    f = parse_path_state("regular file|640|root|app\n" + "a" * 64 + "\n", 0)
    assert (f.kind, f.mode, f.group, f.sha256) == ("regular file", "640", "app", "a" * 64)
    link = parse_path_state("symbolic link|777|root|root\n/etc/nginx/sites-available/x\n", 0)
    assert link.target == "/etc/nginx/sites-available/x" and link.sha256 is None
    assert parse_path_state("directory|755|deploy|deploy\n", 0).kind == "directory"


def test_path_probe_runs_for_real_on_this_machine(tmp_path):
    target = tmp_path / "f"
    target.write_text("hello")
    out = subprocess.run(["sh", "-c", path_probe(str(target)).command], capture_output=True, text=True)
    parsed = parse_path_state(out.stdout, out.returncode)
    assert parsed.sha256 == hashlib.sha256(b"hello").hexdigest()
    out = subprocess.run(["sh", "-c", path_probe(str(tmp_path / "nope")).command], capture_output=True, text=True)
    assert parse_path_state(out.stdout, out.returncode) is None


def test_file_is_unchanged_when_content_mode_and_owner_match():
    op = File("/etc/x", "content\n", "640", "root", "app")
    assert op.plan({"path:/etc/x": state("content\n", mode="640", group="app")}) == []


def test_file_is_written_when_content_differs_and_only_chmodded_when_mode_differs():
    op = File("/etc/x", "new\n")
    [change] = op.plan({"path:/etc/x": state("old\n")})
    assert "updated" in change.what and "base64 -d" in change.commands[0] and change.backup == "/etc/x"
    [change] = op.plan({"path:/etc/x": state("new\n", mode="600")})
    assert "mode/owner" in change.what and "chmod 644" in change.commands[1]


def test_file_content_may_depend_on_facts():
    op = File("/etc/x", lambda facts: "tls\n" if facts["cert"] else "plain\n")
    assert op.plan({"path:/etc/x": state("tls\n"), "cert": True}) == []
    assert op.plan({"path:/etc/x": state("tls\n"), "cert": False})


def test_file_if_absent_never_overwrites():
    op = FileIfAbsent("/etc/backend", "placeholder\n")
    assert op.plan({"path:/etc/backend": state("deployed\n")}) == []
    assert op.plan({"path:/etc/backend": None})


def test_directory_link_absent():
    assert Directory("/srv/a", "755").plan({"path:/srv/a": state(kind="directory", mode="755")}) == []
    assert Directory("/srv/a", "750").plan({"path:/srv/a": state(kind="directory", mode="755")})
    assert Link("/l", "/t").plan({"path:/l": state(kind="symbolic link", target="/t")}) == []
    assert Link("/l", "/t").plan({"path:/l": state(kind="symbolic link", target="/old")})
    assert Absent("/x").plan({"path:/x": None}) == []
    assert "rm -f" in Absent("/x").plan({"path:/x": state("y")})[0].commands[0]


def test_packages_installs_only_what_is_missing_and_refreshes_lists_then():
    op = Packages(["nginx", "postgresql"], env={"https_proxy": "http://p:1"})
    [probe] = op.probes()
    installed = probe.parse("nginx\tii \npostgresql\tun \n", 0)
    [change] = op.plan({"packages": installed})
    assert change.what == "installed postgresql"
    assert "apt-get -q update" in change.commands[0] and "https_proxy=http://p:1" in change.commands[0]
    assert op.plan({"packages": {"nginx", "postgresql"}}) == []


def test_a_validated_step_restores_every_file_it_touched_when_validation_fails(tmp_path):
    """Run the generated script for real with sh: a failing validator puts the old file back."""
    conf = tmp_path / "site.conf"
    conf.write_text("working\n")
    step = Step("site", [File(str(conf), "broken\n", owner=_me(), group=_group()),
                         File(str(tmp_path / "new.conf"), "new\n", owner=_me(), group=_group())],
                validate=f"grep -q working {conf}", after=[f"touch {tmp_path}/reloaded"])
    facts = {f"path:{conf}": state("working\n"), f"path:{tmp_path}/new.conf": None}
    plan = step.plan(facts)
    out = subprocess.run(["sh", "-c", plan.script], capture_output=True, text=True)
    assert out.returncode == 3 and "rejected" in out.stderr
    assert conf.read_text() == "working\n"
    assert not (tmp_path / "new.conf").exists() and not (tmp_path / "reloaded").exists()


def test_a_validated_step_keeps_good_files_and_runs_after(tmp_path):
    conf = tmp_path / "site.conf"
    step = Step("site", [File(str(conf), "working\n", owner=_me(), group=_group())],
                validate=f"grep -q working {conf}", after=[f"touch {tmp_path}/reloaded"])
    out = subprocess.run(["sh", "-c", step.plan({f"path:{conf}": None}).script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert conf.read_text() == "working\n" and (tmp_path / "reloaded").exists()


def test_an_unchanged_step_has_no_script_and_says_why():
    step = Step("x", [Absent("/x")], note=lambda facts: "fine")
    plan = step.plan({"path:/x": None})
    assert plan.script is None and plan.note == "fine"


def test_gather_output_is_split_per_probe_with_exit_codes():
    out = "gwT\nfirst\nline\ngwT 0\ngwT\n\ngwT 1\ngwT\nlast\ngwT 0\n"
    assert parse_sections(out, "gwT", 3) == [("first\nline", 0), ("", 1), ("last", 0)]
    assert parse_sections(out, "gwT", 4) is None


def test_write_file_is_atomic_and_sets_mode(tmp_path):
    target = tmp_path / "f"
    cmd = shell.write_file(str(target), "é\n", "600", _me(), _group())
    subprocess.run(["sh", "-c", cmd], check=True)
    assert target.read_text() == "é\n" and oct(target.stat().st_mode)[-3:] == "600"
    assert list(tmp_path.iterdir()) == [target]


def _me():
    import pwd, os
    return pwd.getpwuid(os.getuid()).pw_name


def _group():
    import grp, os
    return grp.getgrgid(os.getgid()).gr_name
