"""The deploy's server-side scripts, without a server: they stop at their first failing line, report as data,
pass shellcheck, and keep hostile values (from the inventory or the project) inert."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tasks.commands import release as commands, shell
from tasks.layout import Layout
from tasks.facts.releases import GOOD, Release
from tasks.commands.database import Client
from tests.unit.shellcheck import assert_shellcheck_clean

LAYOUT = Layout("mysite")
RELEASE = Release("20260101T000000Z-abcdef1", GOOD, commit="abcdef1" + "0" * 33, requirements="h1")
STATIC_RELEASE = Release("20260101T000000Z-abcdef1", GOOD, static_sample={"file": "admin/css/base.css",
                                                                        "url": "/static/admin/css/base.css"})
HOSTILE = ["$(touch CANARY)", "`touch CANARY`", "'; touch CANARY; '", '"$(touch CANARY)"', "a\ntouch CANARY",
           "x;touch CANARY", "${IFS}touch${IFS}CANARY"]


def run(script: str, tmp_path: Path, stubs: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `script` with sh in `tmp_path`, with stub commands (name -> sh body) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (stubs or {}).items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=30)


# --- the command layer ---------------------------------------------------------------------------------------

def test_a_script_stops_at_its_first_failing_line_even_inside_a_multi_line_step(tmp_path):
    out = run(shell.script("false\necho second"), tmp_path)
    assert out.returncode == 1 and "second" not in out.stdout
    assert shell.parse_reports(out.stdout) == {"failed": "step 1", "code": 1}
    assert "failed (step 1): false" in out.stderr


def test_a_failing_and_list_ends_the_script_too(tmp_path):
    out = run(shell.script(("first", "false && true"), ("second", "echo second")), tmp_path)
    assert out.returncode == 1 and "second" not in out.stdout
    assert shell.parse_reports(out.stdout)["failed"] == "first"


def test_the_failed_step_is_named_with_its_exit_status_and_reports_merge(tmp_path):
    out = run(shell.script(("a", shell.report(venv="reused")), ("pip", "exit 7"), ("after", "echo no")), tmp_path)
    assert out.returncode == 7 and "no" not in out.stdout.split()
    assert shell.parse_reports(out.stdout) == {"venv": "reused", "failed": "pip", "code": 7}


def test_a_script_that_succeeds_reports_no_failure(tmp_path):
    out = run(shell.script(("a", "true"), ("b", shell.report(x=[1, "two"]))), tmp_path)
    assert out.returncode == 0 and shell.parse_reports(out.stdout) == {"x": [1, "two"]}


@pytest.mark.parametrize("value", HOSTILE)
def test_a_step_name_or_first_line_cannot_break_out_of_the_script(tmp_path, value):
    out = run(shell.script((value, f"exit 3 # {value}")), tmp_path)
    assert out.returncode == 3 and not (tmp_path / "CANARY").exists()
    assert "failed" in shell.parse_reports(out.stdout)


@pytest.mark.parametrize("value", HOSTILE)
def test_writing_a_file_keeps_its_content_literal_and_leaves_no_temp_file_on_failure(tmp_path, value):
    target = tmp_path / "f"
    out = run(shell.write_file(str(target), value, "600", str(os.getuid()), str(os.getgid())), tmp_path)
    assert out.returncode == 0 and target.read_text() == value and not (tmp_path / "CANARY").exists()
    failing = run(shell.script(shell.write_file(str(target), "x", "600", "no-such-user-here", "nogroup")), tmp_path)
    assert failing.returncode != 0 and sorted(p.name for p in tmp_path.iterdir()) == ["bin", "f"]


# --- the deploy's scripts --------------------------------------------------------------------------------------

def build_script() -> str:
    return shell.script(
        ("cleanup", commands.cleanup(LAYOUT, ["r0"], ["r1"], ["f1"], ["v1"], ["b.dump"],
                                     uploading=commands.upload_path(LAYOUT, RELEASE.id))),
        ("unpack", commands.unpack(LAYOUT, RELEASE, commands.upload_path(LAYOUT, RELEASE.id))),
        ("environment", commands.env_file(LAYOUT, {"DJANGO_ALLOWED_HOSTS": "a.test"})),
        ("pip", commands.venv(LAYOUT, RELEASE.id, "h1", "requirements.txt", ["gunicorn>=23,<24"],
                              {"https_proxy": "http://proxy:3128"})),
        ("checks", commands.release_check(LAYOUT, RELEASE.id, "print(1)")),
    )


@pytest.mark.parametrize("script", [
    build_script(),
    shell.script(("start", commands.start_and_check(LAYOUT, RELEASE.id, "app.test", "/healthz/", True, 30)),
                 ("switch", commands.switch(LAYOUT, RELEASE, "r0", {"event": "live"}, 10, backend_ready=False))),
    shell.script(commands.switch(LAYOUT, RELEASE, None, {"event": "live"}, 0, backend_ready=True,
                                 static_check=commands.static_served(LAYOUT, STATIC_RELEASE, "app.test", True))),
    shell.script(("switch", commands.switch(LAYOUT, RELEASE, "r0", {"event": "live"}, 10, backend_ready=False,
                                            serving=("app.test", "/healthz/", True)))),
    shell.script(commands.switch(LAYOUT, RELEASE, None, {"event": "live"}, 0, backend_ready=True,
                                 serving=("203.0.113.10", "/", False))),
    shell.script(commands.set_aside(LAYOUT, RELEASE, {"event": "failed"})),
    shell.script(commands.set_aside(LAYOUT, RELEASE, {"event": "failed"}, keep=False)),
    shell.script(commands.backup(LAYOUT, Client("mysite"), "r-before-migrate")),
    shell.script(commands.migrate(LAYOUT, RELEASE.id, "mysite", {"counter": "0001_initial", "auth": "zero"})),
    shell.script(commands.prune_static(LAYOUT, ["r1", "r2"])),
], ids=["build", "start+switch (first)", "switch", "switch served (first)", "switch served", "set aside", "remove", "backup", "reverse", "prune static"])
def test_every_deploy_script_passes_shellcheck(script):
    assert_shellcheck_clean(script)


def test_the_state_probes_pass_shellcheck():
    for probe in commands.state_probes(LAYOUT, Client("mysite")):
        assert_shellcheck_clean(probe.command)


def test_a_failing_release_check_hands_on_the_part_that_failed_and_keeps_the_free_space(tmp_path):
    """The check names each part in a report line before it runs; on failure those lines reach the tool's
    reports (the last one is the part that failed), a forged report of the project's does not."""
    gates = "".join(f'echo \'{shell.REPORT} {{"gate": "{g}"}}\'; ' for g in ("readiness", "checks"))
    script = shell.script(("checks", commands.release_check(LAYOUT, RELEASE.id, "print(1)")))
    out = run(script, tmp_path, {
        "systemd-run": f"{gates}echo '{shell.REPORT} {{\"free_kib\": 1}}'; echo 'SystemCheckError: x' >&2; exit 1",
        "df": "printf 'Filesystem 1K-blocks Used Available\\n/dev/x 100 50 777\\n'",
        "chown": "true", "install": "true", "rm": "true"})
    assert out.returncode != 0
    assert shell.parse_reports(out.stdout) == {"gate": "checks", "free_kib": 777, "failed": "checks", "code": 1}
    assert "SystemCheckError: x" in out.stderr


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_health_check_path_or_host_stays_a_value(tmp_path, value):
    """The path and host go into curl and into messages; they must never run."""
    script = shell.script(commands.start_and_check(LAYOUT, RELEASE.id, value, "/h?" + value, False, 1))
    out = run(script, tmp_path, {"systemctl": 'case "$*" in *NRestarts*) echo 0 ;; *ActiveState*) echo active ;; '
                                              '*is-active*) exit 3 ;; esac', "journalctl": "true"})
    assert out.returncode == 4 and not (tmp_path / "CANARY").exists()
    assert f"gave no healthy answer to GET /h?{value.splitlines()[0]}" in out.stderr


@pytest.mark.parametrize("value", HOSTILE)
def test_project_code_runs_sandboxed_with_every_value_as_one_argument(tmp_path, value):
    """systemd-run gets the env file as a property (systemd parses it: no shell sources it), and each
    value (a proxy URL, a requirement) as one argument."""
    script = commands.venv(LAYOUT, RELEASE.id, "h1", "requirements.txt", [value], {"https_proxy": value})
    out = run(shell.script(script), tmp_path, {
        "systemd-run": 'printf "%s\\n" "$@" > args; exit 9', "install": "true", "rm": "true"})
    assert out.returncode != 0 and not (tmp_path / "CANARY").exists()
    args = (tmp_path / "args").read_text()
    assert f"--setenv=https_proxy={value}\n" in args
    assert f"--uid={LAYOUT.build_user}" in args and f"--property=EnvironmentFile=-{LAYOUT.env_file}" in args
    assert "--property=NoNewPrivileges=yes" in args and "--property=ProtectSystem=strict" in args


def test_the_venv_is_built_by_uv_from_its_cache_copied_never_linked(tmp_path):
    """The build user's uv makes the venv with the server's Python, then installs the requirements and the extra
    ones into it, with bytecode; its cache is the one writable place besides the venv and the release, and
    files are copied out of it (sealing the venv must not touch the cache's files)."""
    import subprocess
    from tasks.layout import UV
    script = commands.venv(LAYOUT, RELEASE.id, "h1", "requirements.txt", ["gunicorn>=23,<24"], {})
    out = run(shell.script(script), tmp_path, {
        "systemd-run": 'printf "%s\\n" "$@" > args; exit 9', "install": "true", "rm": "true"})
    assert out.returncode != 0
    args = (tmp_path / "args").read_text().splitlines()
    venv, release = LAYOUT.venv("h1"), LAYOUT.release(RELEASE.id)
    assert f"--property=ReadWritePaths={venv} {release} {LAYOUT.uv_cache}" in args
    assert {f"--setenv=UV_CACHE_DIR={LAYOUT.uv_cache}", "--setenv=UV_LINK_MODE=copy",
            "--setenv=UV_PYTHON_DOWNLOADS=never", "--setenv=UV_NO_CONFIG=1"} <= set(args)
    argv = args[args.index("--") + 1:]
    assert argv[3] == UV
    # The little script, run with a uv that says how it was called.
    fake = tmp_path / "uv"
    fake.write_text('#!/bin/sh\nprintf "%s|" "$@" >> calls; echo >> calls\n')
    fake.chmod(0o755)
    subprocess.run([*argv[:3], str(fake), *argv[4:]], cwd=tmp_path, check=True)
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"venv|--quiet|--python|python3|{venv}|",
        f"pip|install|--quiet|--compile-bytecode|--python|{venv}/bin/python|-r|{release}/requirements.txt|"
        "gunicorn>=23,<24|"]


@pytest.mark.parametrize("key, value", [("DJANGO_ALLOWED_HOSTS", "a\nB=c"), ("DJANGO_ALLOWED_HOSTS", "a\rb"),
                                        ("NOT A NAME", "x")])
def test_a_managed_value_that_would_break_the_env_file_is_refused(key, value):
    with pytest.raises(ValueError):
        commands.env_file(LAYOUT, {key: value})


def test_a_failed_dump_leaves_nothing_that_looks_like_a_backup(tmp_path):
    layout = Layout("m")
    script = commands.backup(layout, Client("m"), "r-before-migrate").replace(layout.backups, str(tmp_path))
    out = run(shell.script(("backup", script)), tmp_path, {
        "runuser": 'shift 2; exec "$@"', "pg_dump": 'for a; do case "$a" in --file=*) echo partial > "${a#--file=}";;'
                                                     ' esac; done; exit 1'})
    assert out.returncode != 0 and shell.parse_reports(out.stdout)["failed"] == "backup"
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


def test_the_switch_flips_the_live_link_and_current_only_after_nginx_accepts_the_backend():
    script = commands.switch(LAYOUT, RELEASE, "r0", {"event": "live"}, 10, backend_ready=False)
    assert script.index("nginx -t") < script.index(f"ln -sfn {LAYOUT.socket(RELEASE.id)}")
    assert script.index(f"ln -sfn {LAYOUT.socket(RELEASE.id)}") < script.index("systemctl reload nginx")
    ready = commands.switch(LAYOUT, RELEASE, "r0", {"event": "live"}, 10, backend_ready=True)
    assert "nginx" not in ready  # a switch on a server that has served before never touches nginx
    assert f"ln -sfn {LAYOUT.unit_path} {LAYOUT.boot_link(RELEASE.id)}" in ready
    assert f"rm -f {LAYOUT.boot_link('r0')}" in ready


def test_free_space_and_applied_migrations_are_parsed():
    df = ("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
          "/dev/vda 100 50 4096 50% /\ntmpfs 10 9 1 90% /srv/m/venvs\n")
    assert commands.parse_free(df, 0) == [4096, 1]
    assert commands.parse_applied("a.0001\nb.0001\n", 0) == ["a.0001", "b.0001"]
    assert commands.parse_applied("", 0) == [] and commands.parse_applied("", 2) is None


@pytest.mark.parametrize("value", HOSTILE)
def test_the_static_file_fetched_through_nginx_is_compared_with_the_collected_one(tmp_path, value):
    """Names come from the project: they stay values. A file nginx does not return stops the switch."""
    layout = Layout("m")
    release = Release("r1", GOOD, static_sample={"file": value, "url": "/static/x.css"})
    collected = tmp_path / "static" / value
    collected.parent.mkdir(parents=True, exist_ok=True)
    collected.write_text("body{}")
    script = commands.static_served(layout, release, "app.test", True).replace(
        shell.q(layout.release("r1") + "/static/" + value), shell.q(str(collected)))
    served = run(shell.script(script), tmp_path, {"curl": "printf 'body{}'"})
    assert served.returncode == 0 and not (tmp_path / "CANARY").exists()
    missing = run(shell.script(script), tmp_path, {"curl": "printf '<html>placeholder</html>'"})
    assert missing.returncode == 5 and "its static files would not be served: GET /static/x.css" in missing.stderr


# --- "deployed" means the site serves the release: the request through nginx ------------------------------------

NEW, OLD = "20261201T000000Z-bbbbbbb", "20261101T000000Z-aaaaaaa"


@pytest.mark.parametrize("value", HOSTILE)
def test_the_request_through_nginx_is_one_builder_by_the_site_s_name_with_every_value_one_argument(tmp_path, value):
    for https in (True, False):
        out = run(commands.through_nginx(value, "/" + value, https, "-o", "/dev/null"), tmp_path,
                  {"curl": 'printf "%s\\0" "$@" > args'})
        assert out.returncode == 0 and not (tmp_path / "CANARY").exists()
        args = (tmp_path / "args").read_text().split("\0")[:-1]
        scheme = "https" if https else "http"
        assert args[-1] == f"{scheme}://{value}/{value}" and args[-3:-1] == ["-o", "/dev/null"]
        assert args[5:7] == (["--resolve", f"{value}:443:127.0.0.1"] if https
                             else ["--connect-to", f"{value}:80:127.0.0.1:80"])
        assert args[:3] == ["-s", "--noproxy", "*"]


def test_the_backend_include_names_the_answering_release_to_the_server_itself_only():
    conf = commands.backend_conf(LAYOUT)
    assert f"proxy_pass http://unix:{LAYOUT.live_socket};" in conf
    assert f"root {LAYOUT.live_socket};" in conf  # $realpath_root: the live link resolved for each request
    # Only inside the `if`: the location keeps no add_header of its own, so visitors keep the server's headers.
    before, inside = conf.split("if ($remote_addr = 127.0.0.1) {\n")
    assert "add_header" not in before
    assert inside == f"\tadd_header {commands.RELEASE_HEADER} $realpath_root;\n}}\n"


def test_the_serving_check_refuses_a_release_id_that_is_not_one():
    with pytest.raises(ValueError):
        commands.serving_check(LAYOUT, "20261201T000000Z-bbbbbbb'; touch CANARY; '", "a.test", "/", True)


def served_script(tmp_path: Path, old: str | None, rewritten: bool) -> str:
    """The check after the links flip, with the links and the include in tmp_path."""
    script = commands._served_by(LAYOUT, NEW, old, "app.test", "/healthz/", True, backend_rewritten=rewritten)
    for path in (LAYOUT.live_socket, LAYOUT.current, LAYOUT.nginx_backend, LAYOUT.maintenance_flag):
        script = script.replace(path, str(tmp_path / path.strip("/").replace("/", "_")))
    return script


NGINX_STUBS = {"nginx": "echo nginx >> calls", "systemctl": 'echo "systemctl $*" >> calls', "pgrep": "true",
               "cat": "echo 1"}


def test_a_site_that_answers_from_the_new_release_goes_live_without_reloading_nginx(tmp_path):
    out = run(shell.script(("switch", served_script(tmp_path, OLD, False))), tmp_path, {
        **NGINX_STUBS, "curl": f"printf '200 {LAYOUT.socket(NEW)}'"})
    assert out.returncode == 0, out.stderr
    assert shell.parse_reports(out.stdout) == {"through_nginx": "200", "repaired": False}
    assert not (tmp_path / "calls").exists()


def test_nginx_serving_the_placeholder_page_is_reloaded_and_asked_again(tmp_path):
    """The djangogirls server: backend.conf proxies to the live link, nginx never loaded it."""
    answers = tmp_path / "answers"
    answers.write_text(f"200 \n200 {LAYOUT.socket(NEW)}\n")
    curl = f'head -n 1 {answers} | tr -d "\\n"; sed -i 1d {answers}'
    out = run(shell.script(("switch", served_script(tmp_path, OLD, False))), tmp_path, {**NGINX_STUBS, "curl": curl})
    assert out.returncode == 0, out.stderr
    assert shell.parse_reports(out.stdout) == {"through_nginx": "200", "repaired": True}
    assert "systemctl reload nginx" in (tmp_path / "calls").read_text()


def test_a_site_still_serving_the_placeholder_after_a_reload_undoes_the_switch_and_says_so(tmp_path):
    live, current = tmp_path / "srv_mysite_live.sock", tmp_path / "srv_mysite_current"
    live.symlink_to(LAYOUT.socket(NEW))
    out = run(shell.script(("switch", served_script(tmp_path, OLD, False))), tmp_path, {
        **NGINX_STUBS, "curl": "printf '200 '"})
    assert out.returncode == 6 and shell.parse_reports(out.stdout)["failed"] == "switch"
    assert (f"nginx does not serve {NEW}, even after a reload: GET /healthz/ through nginx by the name app.test "
            "answered 200 with no release behind it: the placeholder page") in out.stderr
    assert os.readlink(live) == LAYOUT.socket(OLD) and os.readlink(current) == LAYOUT.release(OLD)


def test_a_first_switch_that_cannot_prove_the_release_puts_the_placeholder_back(tmp_path):
    backend = tmp_path / "etc_gangway_mysite_backend.conf"
    backend.write_text("proxy_pass ...;\n")
    Path(str(backend) + ".gw-prev").write_text("root /placeholder;\n")
    (tmp_path / "srv_mysite_live.sock").symlink_to(LAYOUT.socket(NEW))
    out = run(shell.script(("switch", served_script(tmp_path, None, True))), tmp_path, {
        **NGINX_STUBS, "curl": f"printf '502 {LAYOUT.socket(OLD)}'"})
    assert out.returncode == 6
    assert f"nginx does not serve {NEW}: GET /healthz/ through nginx by the name app.test answered 502 from " \
           f"{LAYOUT.socket(OLD)}" in out.stderr
    assert backend.read_text() == "root /placeholder;\n"  # what nginx is reloaded with
    assert not (tmp_path / "srv_mysite_live.sock").exists()
    assert (tmp_path / "calls").read_text().count("systemctl reload nginx") == 2  # the repair, then the undo


def test_the_serving_check_is_skipped_in_maintenance_mode(tmp_path):
    (tmp_path / "srv_mysite_state_maintenance").write_text("")
    out = run(shell.script(("switch", served_script(tmp_path, OLD, False))), tmp_path, {
        **NGINX_STUBS, "curl": "printf '503 '"})
    assert out.returncode == 0 and shell.parse_reports(out.stdout) == {}


def test_nginx_is_touched_only_after_the_static_check_and_reloaded_in_the_same_step():
    """A first deploy that fails at the static gate leaves the include as it was: nginx and the file agree."""
    script = commands.switch(LAYOUT, STATIC_RELEASE, None, {"event": "live"}, 10, backend_ready=False,
                             static_check=commands.static_served(LAYOUT, STATIC_RELEASE, "app.test", True),
                             serving=("app.test", "/", True))
    static = script.index("its static files would not be served")
    assert static < script.index(f"mktemp {LAYOUT.nginx_backend}") < script.index("nginx -t")
    assert script.index("nginx -t") < script.index(f"ln -sfn {LAYOUT.socket(STATIC_RELEASE.id)}")
    assert script.index(f"ln -sfn {LAYOUT.socket(STATIC_RELEASE.id)}") < script.index("systemctl reload nginx")
    assert script.index("systemctl reload nginx") < script.index(f"want={LAYOUT.socket(STATIC_RELEASE.id)}")


# --- an instance that never started says so ---------------------------------------------------------------------

def test_an_instance_that_fails_to_start_is_named_with_its_journal_not_called_unhealthy(tmp_path):
    script = shell.script(("start", commands.start_and_check(LAYOUT, RELEASE.id, "app.test", "/healthz/", True, 5)))
    out = run(script, tmp_path, {
        "systemctl": 'case "$*" in start*) echo "Job for $2 failed because the control process exited with error '
                     'code." >&2; exit 1 ;; *ActiveState*) echo failed ;; *is-active*) exit 3 ;; esac',
        "journalctl": "echo 'mysite@x.service: Failed to execute /srv/mysite/x/.venv/bin/gunicorn: Argument list "
                      "too long'"})
    assert out.returncode == 4 and shell.parse_reports(out.stdout)["failed"] == "start"
    assert f"the instance {LAYOUT.unit(RELEASE.id)} failed to start (systemd: failed): Job for" in out.stderr
    assert "Argument list too long" in out.stderr and "healthy" not in out.stderr


def test_an_instance_that_stops_while_starting_is_said_to_have_failed_to_start(tmp_path):
    script = shell.script(("start", commands.start_and_check(LAYOUT, RELEASE.id, "app.test", "/healthz/", True, 5)))
    out = run(script, tmp_path, {
        "systemctl": 'case "$*" in *NRestarts*) echo 0 ;; *ActiveState*) echo inactive ;; *is-active*) exit 3 ;; '
                     'esac',
        "journalctl": "echo 'ModuleNotFoundError: No module named mysite'"})
    assert out.returncode == 4
    assert f"the instance {LAYOUT.unit(RELEASE.id)} failed to start (systemd: inactive" in out.stderr
    assert "No module named mysite" in out.stderr and "healthy answer" not in out.stderr


# --- what stays warm after a switch --------------------------------------------------------------------------

A, B, C, D = (f"2026120{n}T000000Z-abcdef{n}" for n in range(1, 5))


def keep_warm_on(tmp_path, running: list[str], live: str, standby: str | None, minutes: int = 10) -> list[str]:
    """Run keep_warm with a systemctl that lists `running` and logs what it is asked to do."""
    listing = "".join(f"{LAYOUT.unit(r)} loaded active running x\\n" for r in running)
    stubs = {"systemctl": f'echo "systemctl $*" >> calls; [ "$1" = list-units ] && printf "{listing}"; exit 0',
             "systemd-run": 'echo "systemd-run $*" >> calls'}
    out = run(commands.keep_warm(LAYOUT, live, standby, minutes), tmp_path, stubs)
    assert out.returncode == 0, out.stderr
    return [line for line in (tmp_path / "calls").read_text().splitlines() if "list-units" not in line]


def test_after_a_switch_only_the_live_release_and_the_rollback_target_run(tmp_path):
    # Three rollbacks left D, C and B warm; A went live; the next rollback goes to the cold release before A.
    calls = keep_warm_on(tmp_path, [A, B, C, D], live=A, standby="20261130T000000Z-abcdef0")
    stopped = {line.split()[-1] for line in calls if line.startswith("systemctl stop --no-block")}
    assert stopped == {LAYOUT.unit(B), LAYOUT.unit(C), LAYOUT.unit(D)}
    for r in (B, C, D):
        assert f"systemctl stop {commands.standby_timer(LAYOUT, r)}.timer" in calls
    assert "systemctl start --no-block mysite@20261130T000000Z-abcdef0.service" in calls
    assert any(line.startswith("systemd-run") and "mysite-standby-20261130T000000Z-abcdef0" in line
               and "--on-active=10min" in line for line in calls)


def test_a_rollback_target_already_warm_keeps_running_with_a_fresh_timer(tmp_path):
    calls = keep_warm_on(tmp_path, [B, C], live=C, standby=B)
    assert not any(line.startswith("systemctl stop --no-block") for line in calls)
    assert any(line.startswith("systemd-run") and commands.standby_timer(LAYOUT, B) in line for line in calls)


def test_without_a_rollback_target_or_with_standby_off_only_the_live_release_runs(tmp_path):
    calls = keep_warm_on(tmp_path, [A, B], live=B, standby=None)
    assert f"systemctl stop --no-block {LAYOUT.unit(A)}" in calls and not any("systemd-run" in c for c in calls)
    (tmp_path / "calls").unlink()
    calls = keep_warm_on(tmp_path, [A, B], live=B, standby=A, minutes=0)
    assert f"systemctl stop --no-block {LAYOUT.unit(A)}" in calls and not any("start" in c.split()[1] for c in calls)


def test_keep_warm_reports_the_instances_whose_stop_systemd_accepted(tmp_path):
    listing = "".join(f"{LAYOUT.unit(r)} loaded active running x\\n" for r in (A, B, C))
    stubs = {"systemctl": f'[ "$1" = list-units ] && printf "{listing}"; exit 0', "systemd-run": "exit 0"}
    out = run(commands.keep_warm(LAYOUT, C, B, 0), tmp_path, stubs)
    assert shell.parse_reports(out.stdout) == {"web_stopping": f"{LAYOUT.unit(A)} {LAYOUT.unit(B)}"}
    out = run(commands.keep_warm(LAYOUT, C, B, 10), tmp_path, stubs)
    assert shell.parse_reports(out.stdout) == {"web_stopping": LAYOUT.unit(A)}


def test_keep_warm_passes_shellcheck():
    assert_shellcheck_clean(commands.keep_warm(LAYOUT, A, B, 10))
