"""Dry runs without a server: the diffs and commands they print, what they hide, and that they run nothing."""

import hashlib
import io
import json
import re
import subprocess
import tarfile
import unicodedata
from pathlib import Path

from tasks.cli import dryrun
from tasks import provisioning
from tasks.commands import shell
from tasks.cli.dryrun import command_lines, env_changes, file_diff, migration_files, safe
from tasks.inventory import parse
from tasks.layout import Layout
from tasks.provisioning import Server, nginx
from tasks.commands.release import env_file, state_probes
from tasks.session.runner import Reporter
from tasks.facts.steps import File, PathState, Step
from tasks.commands.database import Client
from tests.unit.shellcheck import assert_shellcheck_clean

HOSTILE = "$(touch /tmp/x)'\"\n;`id`"


def printable(text: str) -> bool:
    """No character that could drive a terminal: no escapes, no carriage returns, no direction overrides."""
    return not any(c not in "\n\t" and unicodedata.category(c).startswith("C") for c in text)


def test_safe_escapes_terminal_control_and_masks_url_passwords():
    assert safe("\x1b]0;owned\x07\x1b[2J") == "\\x1b]0;owned\\x07\\x1b[2J"
    assert safe("ok\rfake") == "ok\\x0dfake"
    assert safe("a\u202eevil") == "a\\u202eevil"  # right-to-left override: text that reads otherwise
    assert safe("tab\there, é ü ✓") == "tab\there, é ü ✓"
    assert safe("env http_proxy=http://bob:s3cret@proxy:3128 apt-get") == "env http_proxy=http://***@proxy:3128 apt-get"


def test_a_changed_file_is_a_unified_diff():
    lines = file_diff("/etc/x.conf", b"a\nsize 10m;\nc\n", b"a\nsize 77m;\nc\n")
    assert lines[0] == "--- /etc/x.conf (on the server)"
    assert lines[1] == "+++ /etc/x.conf (as provision would write it)"
    assert "-size 10m;" in lines and "+size 77m;" in lines and " a" in lines


def test_a_new_file_is_diffed_against_nothing():
    lines = file_diff("/etc/new", None, b"one\ntwo")
    assert lines[0] == "--- /dev/null" and "+one" in lines
    assert "+two\\ (no newline at end of file)" in lines


def test_secret_binary_and_huge_files_are_only_said_to_differ():
    assert file_diff("/k", b"old secret", b"new secret", hidden=True) == ["content not shown: the file is secret"]
    assert file_diff("/b", b"\0\1\2", b"text\n") == ["binary content differs (3 -> 5 bytes)"]
    assert file_diff("/b", b"\xff\xfe", b"text\n")[0].startswith("binary content differs")
    big = b"x\n" * (dryrun.MAX_SHOWN_BYTES // 2 + 1)
    assert "too large to show" in file_diff("/big", big, b"x\n")[0]


def test_hostile_file_content_prints_as_inert_text():
    old = b"ok\n\x1b]0;pwned\x07\x1b[1A\x1b[2Kfake line\rhidden\n\xe2\x80\xaeevil\n"
    lines = file_diff("/etc/x", old, b"ok\n")
    assert all(printable(line) for line in lines)
    assert "-\\x1b]0;pwned\\x07\\x1b[1A\\x1b[2Kfake line\\x0dhidden" in lines
    assert "-\\u202eevil" in lines


def test_long_diffs_and_commands_are_cut():
    lines = file_diff("/f", None, "".join(f"{i}\n" for i in range(1000)).encode())
    assert len(lines) == dryrun.MAX_DIFF_LINES + 1 and lines[-1].endswith("more lines")
    shown = command_lines(["x" * 500, "\n".join(f"line {i}" for i in range(20))])
    assert shown[0] == "$ " + "x" * dryrun.MAX_LINE + " ..."
    assert shown[1] == "$ line 0" and shown[-1] == f"  ... {20 - dryrun.MAX_COMMAND_LINES} more lines"


def test_content_probe_reads_only_and_quotes_a_hostile_path(tmp_path):
    path = tmp_path / HOSTILE.replace("\n", "_").replace("/", "_")
    path.write_bytes(b"data\x1b\n")
    probe = dryrun.content_probe(str(path))
    assert_shellcheck_clean(probe.command, exclude=("SC2016",))  # the path's $( ) is literal, as it should be
    out = subprocess.run(["sh", "-c", probe.command], capture_output=True, text=True)
    assert probe.parse(out.stdout, out.returncode) == b"data\x1b\n"
    assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < path.stat().st_mtime


# --- provision --------------------------------------------------------------------------------------------------

def server(**app):
    inv = parse({"app": {"name": "mysite", "domains": ["app.test"], **app},
                 "hosts": [{"address": "10.0.0.2"}], "proxy": {"url": "http://bob:s3cret@proxy:3128"}},
                "x", Path("."))
    return Server(inv, inv.hosts[0], ("ssh-ed25519 AAAA me",), lambda: None)


class FakeRemote:
    """Answers gathers from functions of each probe; any script it is asked to run fails the test."""

    def __init__(self, answer, contents=None):
        self.answer = answer
        self.contents = contents or {}
        self.gathers = []

    def gather(self, probes):
        probes = list(probes)
        self.gathers.append([p.key for p in probes])
        return {p.key: self.contents.get(p.key[len("content:"):]) if p.key.startswith("content:")
                else self.answer(p) for p in probes}

    def run(self, script, **kwargs):
        raise AssertionError(f"a dry run ran a script:\n{script}")


def fresh(probe):
    """What a never provisioned server answers: no such file, no such command, nothing running."""
    return probe.parse("absent\n", 0) if probe.key.startswith("path:") else probe.parse("", 127)


def test_a_fresh_server_shows_every_step_it_would_change_and_runs_nothing():
    out = io.StringIO()
    remote = FakeRemote(fresh)
    steps = provisioning.steps(server())
    recap = dryrun.preview(remote, steps, Reporter(out))
    text = out.getvalue()
    assert "later steps may differ once earlier ones are applied" in text
    # Every step would change something, but those with nothing to do: the hostname (a container's resolves),
    # and the services, jobs and process types this inventory does not ask for.
    assert [name.split(":")[0] for name in recap.unchanged] == ["hostname", "redis", "scheduled jobs",
                                                                 "process types"], text
    assert len(recap.changed) == len(steps) - 4, text
    assert len(remote.gathers) == 1  # no file exists, so no content to fetch
    assert "+++ /etc/nginx/sites-available/mysite (as provision would write it)" in text
    assert "$ DEBIAN_FRONTEND=noninteractive" in text or "apt-get" in text
    assert "s3cret" not in text and "http://***@proxy:3128" in text
    assert printable(text)


def test_a_changed_value_shows_the_diff_and_secrets_stay_hidden():
    site = server(max_upload_mb=77)
    current = nginx.site_config(server(), False, (1, 26, 0)).encode()
    hidden = {"/home/deploy/.ssh/authorized_keys": b"old key\n", "/etc/sudoers.d/gangway-deploy": b"x\n",
              "/etc/apt/apt.conf.d/80gangway-proxy": b"Acquire::http::Proxy \"http://old:pw@p\";\n"}

    def answer(probe):
        path = probe.key[len("path:"):]
        if path == site.layout.nginx_site:
            return PathState("regular file", "644", "root", "root", hashlib.sha256(current).hexdigest())
        if path in hidden:
            return PathState("regular file", "600", "root", "root", hashlib.sha256(hidden[path]).hexdigest())
        return fresh(probe)

    out = io.StringIO()
    remote = FakeRemote(answer, {site.layout.nginx_site: current + b"\x1b[31m\n"})
    dryrun.preview(remote, provisioning.steps(site), Reporter(out))
    text = out.getvalue()
    fetched = remote.gathers[1]
    assert fetched == [f"content:{site.layout.nginx_site}"]  # secrets never leave the server
    assert f"-\tclient_max_body_size {server().inventory.app.max_upload_mb}m;" in text
    assert "+\tclient_max_body_size 77m;" in text
    assert "-\\x1b[31m" in text and "\x1b" not in text
    assert "old key" not in text and "old:pw" not in text and "AAAA me" not in text
    assert text.count("content not shown: the file is secret") >= 3, text
    assert "mode 600 -> 440" in text  # the sudoers file's mode, shown with the hidden content


def test_a_mode_only_change_and_the_reload_after_are_shown():
    op = File("/etc/x", "same\n", "640", "root", "app")
    facts = {"path:/etc/x": PathState("regular file", "644", "root", "root", hashlib.sha256(b"same\n").hexdigest())}
    lines = dryrun.step_details(Step("x", [op], validate="nginx -t", after=["systemctl reload nginx"]), facts, {})
    assert lines[0] == "/etc/x mode/owner fixed (mode 644 -> 640, owner root:root -> root:app)"
    assert "checked before it takes effect: nginx -t" in lines and "  $ systemctl reload nginx" in lines


# --- deploy -------------------------------------------------------------------------------------------------------

def test_env_changes_name_secrets_and_show_only_gangways_own_values():
    before = ("# managed by gangway: DJANGO_ALLOWED_HOSTS API_KEY OLD\nDJANGO_ALLOWED_HOSTS='a.test'\n"
              "API_KEY='hunter2'\nOLD='x'\nDJANGO_SECRET_KEY='supersecret'\nOPERATOR='mine'\n")
    after = ("# managed by gangway: DJANGO_ALLOWED_HOSTS API_KEY NEW\nDJANGO_ALLOWED_HOSTS='b.test'\n"
             "API_KEY='hunter3'\nDJANGO_SECRET_KEY='supersecret'\nOPERATOR='mine'\nNEW='\x1b[2J'\n")
    lines = env_changes(before, after, shown={"DJANGO_ALLOWED_HOSTS"})
    assert lines == ["~ API_KEY (value changed, not shown)", "~ DJANGO_ALLOWED_HOSTS: a.test -> b.test",
                     "+ NEW (value not shown)", "- OLD"]
    created = env_changes(None, "DJANGO_SECRET_KEY='s3'\nDJANGO_DB_NAME='mysite'\n", shown={"DJANGO_DB_NAME"})
    assert created == ["+ DJANGO_DB_NAME=mysite", "+ DJANGO_SECRET_KEY (generated on the server, never shown)"]
    assert env_changes(None, f"{HOSTILE.splitlines()[0]}\x1b='v'\n", shown=set())[0].endswith(
        "\\x1b (value not shown)")


def test_the_env_file_preview_reads_and_reports_and_writes_nothing(tmp_path):
    layout = Layout("mysite")
    target = tmp_path / "env"
    target.write_text("# managed by gangway: A\nA='1'\nDJANGO_SECRET_KEY='k'\nMINE='x'\n")
    before = target.stat()
    command = env_file(layout, {"A": "2", "B": HOSTILE.replace("\n", " ").replace("'", "")}, preview=True)
    out = subprocess.run(["sh", "-c", command.replace(layout.env_file, str(target))], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    report = shell.parse_reports(out.stdout)
    assert report["env_before"] == target.read_text()
    assert 'A="2"' in report["env_after"] and "DJANGO_SECRET_KEY='k'" in report["env_after"]
    assert target.stat().st_mtime_ns == before.st_mtime_ns and list(tmp_path.iterdir()) == [target]
    missing = subprocess.run(["sh", "-c", command.replace(layout.env_file, str(tmp_path / "none"))],
                             capture_output=True, text=True)
    assert json.loads(missing.stdout.split(" ", 1)[1])["env_before"] is None
    assert not (tmp_path / "none").exists()


def test_migration_files_of_a_project_archive(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("manage.py", "counter/migrations/__init__.py", "counter/migrations/0002_hit_agent.py",
                     "counter/migrations/0001_initial.py", "shop/orders/migrations/0001_initial.py",
                     "counter/migrations/README.md"):
            info = tarfile.TarInfo(name)
            info.size = 0
            tar.addfile(info, io.BytesIO(b""))
    assert migration_files(buffer.getvalue()) == ["counter.0001_initial", "counter.0002_hit_agent",
                                                  "orders.0001_initial"]


# --- read-only probes -----------------------------------------------------------------------------------------

WRITES = re.compile(r"(?<![0-9&])>(?!\s*/dev/null)|\b(rm|mv|cp|ln|touch|tee|install|mkdir|chmod|chown|useradd|"
                    r"usermod|mktemp|sed -i|apt-get|systemd-run|ALTER|INSERT|UPDATE|DELETE|CREATE|DROP)\b|"
                    r"systemctl (start|stop|restart|reload|enable|disable|daemon-reload)")


def test_every_probe_a_dry_run_sends_only_reads():
    """What a dry run runs on the server: the probes of every provision step (fresh server or not, with or
    without domains and a proxy), the deploy's state probes, the content probe. None writes."""
    probes = [p for s in (server(), server(domains=[])) for step in provisioning.steps(s) for p in step.probes()]
    probes += state_probes(Layout("mysite"), Client("mysite")) + [dryrun.content_probe("/etc/x")]
    for probe in probes:
        command = probe.command.replace("2>/dev/null", "").replace("2>&1", "")
        assert not WRITES.search(command), f"{probe.key} may write: {probe.command}"


def test_a_step_planned_twice_alike_is_shown_once():
    op = File("/etc/x", "new\n")
    out = io.StringIO()
    recap = dryrun.preview(FakeRemote(lambda probe: None), [Step("site", [op]), Step("site", [op])], Reporter(out))
    assert recap.changed == ["site", "site"]
    assert out.getvalue().count("+new") == 1 and "site: the same as above, as the server is now" in out.getvalue()


def test_deploy_preview_reads_the_state_runs_only_the_env_preview_and_names_what_it_would_do():
    from tasks.cli.deploy import Session, preview
    from tasks.connection.remote import Result
    from tasks.project.source import Source

    inv = parse({"app": {"name": "mysite", "domains": ["app.test"], "keep_releases": 2,
                         "env": {"PAYMENT_TOKEN": "tok-private"}},
                 "hosts": [{"address": "10.0.0.2"}]}, "x", Path("."))
    live = "20260101T000000Z-aaaaaaa"
    meta = json.dumps({"id": "", "status": "good", "commit": "a" * 40, "requirements": "r1",
                       "migrations": ["counter.0001_initial"]})
    old = "20250101T000000Z-bbbbbbb"
    facts = {"releases": f"{live}\t{meta}\n{old}\t{meta}\n", "failed": [], "live": live, "backend": "",
             "running": [live], "history": "", "venvs": ["r1"], "python": "3.13.5", "provisioned": True,
             "applied": ["counter.0001_initial"], "backups": [], "free": [10 ** 7, 10 ** 7],
             "maintenance": False, "job_files": {}, "uv": (0, 13, 9)}

    class Remote(FakeRemote):
        def __init__(self):
            super().__init__(lambda probe: facts.get(probe.key))  # newer probes: unknown
            self.scripts = []

        def run(self, script, **kwargs):
            self.scripts.append(script)
            before = ("# managed by gangway: DJANGO_ALLOWED_HOSTS\nDJANGO_ALLOWED_HOSTS='old.test'\n"
                      "DJANGO_SECRET_KEY='sk'\n")
            after = before.replace("old.test", "app.test") + "PAYMENT_TOKEN='tok-private'\n"
            return Result(shell.REPORT + " " + json.dumps({"env_before": before, "env_after": after}) + "\n", "", 0)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("manage.py", "counter/migrations/0001_initial.py", "counter/migrations/0002_more.py"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    src = Source(commit="c" * 40, ref="HEAD", dirty=False, archive=buffer.getvalue(), requirements=b"django\n")
    remote, out = Remote(), io.StringIO()
    preview(Session(inv, inv.hosts[0], remote, Reporter(out)), src)
    text = out.getvalue()
    assert len(remote.scripts) == 1 and "env_before" in remote.scripts[0]  # the env file, previewed; nothing else
    assert re.search(r"to build  release: \d{8}T\d{6}Z-ccccccc ", text), text
    assert "python: environment" in text and "built with uv 0.13.9 (new requirements)" in text
    assert "~ DJANGO_ALLOWED_HOSTS: old.test -> app.test" in text and "+ PAYMENT_TOKEN (value not shown)" in text
    assert "tok-private" not in text and "sk'" not in text and "DJANGO_SECRET_KEY" not in text
    assert "1 pending in the project's files, applied after a database backup: counter.0002_more" in text
    assert f"cleanup: 1 old release(s): {old}\n" in text, text
    assert f"traffic would switch from {live} to " in text


def test_a_file_that_is_a_link_on_the_server_is_not_fetched_and_said_to_differ():
    op = File("/etc/x", "new\n")
    facts = {"path:/etc/x": PathState("symbolic link", "777", "root", "root", None, "/somewhere")}
    assert not dryrun._shows_content(op, facts)
    lines = dryrun.step_details(Step("x", [op]), facts, {})
    assert lines == ["/etc/x updated", "  content differs (the server's copy is not a regular file it could read)"]


def test_what_the_server_says_in_a_note_prints_as_inert_text():
    def answer(probe):
        return probe.parse("evil\x1b]0;x\x07\nlisted\n", 0) if probe.key == "hostname" else fresh(probe)

    out = io.StringIO()
    dryrun.preview(FakeRemote(answer), provisioning.steps(server()), Reporter(out))
    assert "ok        hostname: evil\\x1b]0;x\\x07 resolves locally" in out.getvalue()
    assert printable(out.getvalue())
