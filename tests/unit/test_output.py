"""What a person reads: the Reporter on a terminal and in a CI log, and -v's echo of every remote command."""

from __future__ import annotations

import copy
import io
import time
from types import SimpleNamespace

import pytest

from tasks.commands import shell
from tasks.connection import targets
from tasks.connection.remote import SCRIPT_END, Remote, RemoteError, Stats, shown_command
from tasks.session.runner import Reporter, apply
from tasks.facts.steps import Change, Check, Probe, Step
from tests.unit.test_connect import FakeConnection, FakeTransport
from tests.unit.test_runner import FakeRemote


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_output_has_no_colours_no_carriage_returns_and_says_how_long_a_step_took(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    reporter = Reporter(out)
    assert not reporter.terminal
    reporter.step("changed", "nginx site", "/etc/nginx/sites-available/mysite updated", seconds=1.234)
    reporter.step("ok", "firewall")
    reporter.step("FAILED", "tls certificate", seconds=40)
    assert out.getvalue() == ("  changed   nginx site: /etc/nginx/sites-available/mysite updated (1.2 s)\n"
                              "  ok        firewall\n"
                              "  FAILED    tls certificate (40.0 s)\n")


def test_a_terminal_gets_coloured_statuses_unless_no_color_is_set(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = Terminal()
    Reporter(out).step("changed", "nginx site")
    assert out.getvalue() == "  \033[33mchanged  \033[0m nginx site\n"
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    Reporter(out).step("changed", "nginx site")
    assert out.getvalue() == "  changed   nginx site\n"


def test_a_long_step_says_it_is_still_running_every_ten_seconds_on_a_terminal_and_every_minute_in_a_log():
    assert Reporter(Terminal()).every == 10 and Reporter(io.StringIO()).every == 60
    out = io.StringIO()
    reporter = Reporter(out)
    reporter.every = 0.05
    with reporter.running("system packages"):
        time.sleep(0.18)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("  …         system packages: still running (")
                                   and line.endswith(" s)") for line in lines), lines
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    quick = io.StringIO()
    with Reporter(quick).running("firewall"):
        pass
    assert quick.getvalue() == ""


def test_apply_reports_the_time_of_a_step_that_changed_something():
    remote = FakeRemote({"a": "bad"})
    out = io.StringIO()
    step = Step("A", [Check(Probe("a", "probe a"), lambda v, f: [] if v == "good" else [Change("a fixed", ("fix a",))])])
    apply(remote, [step], Reporter(out))
    assert out.getvalue().startswith("  changed   A: a fixed (") and out.getvalue().endswith(" s)\n")


# --- -v ----------------------------------------------------------------------------------------------------

def test_verbose_prints_every_command_as_it_runs_and_every_upload():
    connection = FakeConnection(FakeTransport())
    connection.put = lambda data, path: None
    seen = []
    remote = Remote(connection, Stats(), echo=seen.append)
    remote.run("systemctl is-active nginx\nsystemctl reload nginx")
    remote.put(b"x" * 12, "/srv/mysite/releases/.upload-abc-config.env")
    assert seen == ["    [10.0.0.2] $ systemctl is-active nginx\n        systemctl reload nginx",
                    "    [10.0.0.2] put /srv/mysite/releases/.upload-abc-config.env (12 bytes over SFTP)"]
    assert connection.commands == [b"systemctl is-active nginx\nsystemctl reload nginx" + SCRIPT_END.encode()]
    quiet = Remote(FakeConnection(FakeTransport()), Stats())
    quiet.run("true")  # no echo: nothing printed, nothing fails


def test_verbose_shows_a_gathers_probes_one_a_line():
    connection = FakeConnection(FakeTransport())
    seen = []
    with pytest.raises(RemoteError):  # the fake server answers nothing: only the echo matters here
        Remote(connection, Stats(), echo=seen.append).gather([Probe("a", "systemctl is-active nginx"),
                                                              Probe("b", "nginx -v 2>&1")])
    assert seen == ["    [10.0.0.2] 2 read-only probes, in one command:",
                    "        $ systemctl is-active nginx", "        $ nginx -v 2>&1"]
    assert len(connection.commands) == 1


def test_verbose_never_shows_file_contents_or_a_proxy_password():
    secret = "DJANGO_SECRET_KEY='" + "s3cr3t" * 20 + "'\n"
    command = shell.write_file("/srv/mysite/shared/env", secret, "640", "root", "mysite")
    shown = shown_command(command)
    assert "s3cr3t" not in shown and shell.q(secret) not in shown
    assert f"printf %s <{len(secret)} bytes> | base64 -d" in shown
    proxied = shell.with_env({"https_proxy": "http://ada:hunter2@proxy.internal:3128"}, "apt-get -q update")
    assert "hunter2" not in shown_command(proxied) and "http://ada:***@proxy.internal:3128" in shown_command(proxied)
    assert shown_command("systemctl reload nginx") == "systemctl reload nginx"


@pytest.mark.parametrize("value, expected", [(None, False), (False, False), (True, True), ("1", True),
                                             ("0", False), ("false", False), ("yes", True), ("", False)])
def test_verbose_comes_from_the_config_key_gangway_verbose(value, expected):
    assert targets.verbose({"gangway": {"verbose": value}}) is expected
    assert targets.verbose({}) is False and targets.verbose(None) is False


def test_the_v_flag_sets_the_config_key_for_the_whole_task():
    from invoke import Config
    c = SimpleNamespace(config=Config({"gangway": {"inventory": "staging", "verbose": False}}))
    targets.set_verbose(c, False)
    assert not targets.verbose(c.config)
    targets.set_verbose(c, True)
    assert targets.verbose(c.config) and c.config.gangway.inventory == "staging"


def test_provision_takes_v_as_its_verbose_flag():
    from tasks.collection import provision
    # get_arguments consumes the task's help texts: ask a copy
    [verbose] = [a for a in copy.deepcopy(provision).get_arguments() if a.name == "verbose"]
    assert set(verbose.names) == {"verbose", "v"}
