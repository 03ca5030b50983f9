"""The shell scripts a deploy or rollback runs on the server, built as plain strings (nothing here runs).

Each function returns one step (or one probe); `tasks.cli.deploy` joins the steps of a phase with `shell.script`,
so each phase costs one round trip and stops at its first failing line. Every value that comes from the
inventory or the project is quoted here, through `tasks.commands.shell`. What a script finds out comes back as report
lines (`shell.report`), never as words to grep for.

Project code (pip's build backends, Django's checks, collectstatic, migrations) never runs with root power:
it runs in a transient systemd unit as the build user (which owns only the release being built) or as the
app user, with the app's environment file read by systemd itself — it is data, never sourced by a shell.
"""

from __future__ import annotations

import json

from . import envfile, processes as process_commands, programs, shell
from .envfile import ENV_FILE_MARK
from ..layout import RELEASE_META, UV, Layout
from ..facts import backups
from ..facts.releases import RELEASE_ID, Release
from .render import TEMPLATES
from .database import Client
from .services import SERVICE_VARIABLES, password_reader_source
from .shell import as_user, join, q, report
from ..facts.steps import Probe

UNHEALTHY_GRACE_S = 3
# The response header nginx adds, for requests from the server itself, naming the socket that answered.
RELEASE_HEADER = "X-Gangway-Release"
DISK_FULL_SIGNS = ("No space left on device", "[Errno 28]", "Disk quota exceeded")
# A build that failed with less than this free failed for want of space; a deploy keeps this much spare.
LOW_SPACE_KIB = 16 * 1024


# --- facts --------------------------------------------------------------------------------------------------

def parse_free(out: str, rc: int) -> list[int]:
    """`df -Pk A B` output -> the free KiB where A and B live, in the order asked."""
    return [int(fields[3]) for fields in (line.split() for line in out.splitlines()[1:])
            if len(fields) >= 6 and fields[3].isdigit()]


def parse_applied(out: str, rc: int) -> list[str] | None:
    """The applied migrations, or None when the database could not be read (never "none applied")."""
    return out.split() if rc == 0 else None


def state_probes(layout: Layout, db: Client) -> list[Probe]:
    """Everything a deploy or rollback needs to know, for one gather."""
    app = layout.app
    meta = RELEASE_META
    return [
        Probe("releases", f"cd {q(layout.releases)} && for d in */; do d=${{d%/}}; "
                          f"printf '%s\\t' \"$d\"; tr -d '\\n' < \"$d/{meta}\" 2>/dev/null; echo; done",
              lambda out, rc: out),
        Probe("failed", f"ls -1 {q(layout.failed)}", lambda out, rc: out.split()),
        live_probe(layout),
        Probe("backend", f"cat {q(layout.nginx_backend)}", lambda out, rc: out if rc == 0 else None),
        Probe("running", f"systemctl list-units --plain --no-legend --state=active {q(app + '@*.service')} "
                         "| awk '{print $1}'",
              lambda out, rc: [u[len(app) + 1:-len(".service")] for u in out.split()]),
        Probe("history", f"tail -n 500 {q(layout.history)}", lambda out, rc: out),
        Probe("venvs", f"cd {q(layout.venvs)} && for v in */; do [ -f \"$v.complete\" ] && echo \"${{v%/}}\"; done",
              lambda out, rc: out.split()),
        Probe("python", "python3 -c 'import sys; print(sys.version.split()[0])'", lambda out, rc: out.strip()),
        Probe("provisioned", f"test -f {q(layout.unit_path)} && test -d {q(layout.state)} && "
                             f"test -d {q(layout.static)} && id -u {q(layout.build_user)}",
              lambda out, rc: rc == 0),
        applied_probe(db),
        backups.listing_probe(layout, "backups", backups.dumps),
        Probe("free", f"df -Pk {q(layout.releases)} {q(layout.venvs)}", parse_free),
        maintenance_probe(layout),
    ]


def live_probe(layout: Layout) -> Probe:
    """The release the live link points at (None: no link)."""
    return Probe("live", f"readlink {q(layout.live_socket)}",
                 lambda out, rc: layout.release_of_socket(out.strip()) if rc == 0 else None)


def unit_state_probe(layout: Layout, release_id: str) -> Probe:
    """The ActiveState of a release's Gunicorn instance as systemd says it ("active", "inactive", "failed"...);
    None when systemd said nothing."""
    return Probe("unit_state", f"systemctl is-active {q(layout.unit(release_id))}",
                 lambda out, rc: out.strip() or None)


def maintenance_probe(layout: Layout) -> Probe:
    """Whether the site is in maintenance mode (`fab maintenance on`)."""
    return Probe("maintenance", join("test", "-f", layout.maintenance_flag), lambda out, rc: rc == 0)


def applied_probe(db: Client) -> Probe:
    return Probe("applied", applied_migrations(db), parse_applied)


def applied_migrations(db: Client) -> str:
    """The migrations the database has applied, as app.name lines in the order they were applied. Before the
    first migrate there is no such table: that is "none" (exit 0); a database that cannot be read fails."""
    sql = ("select to_regclass('django_migrations') is not null as has_table \\gset\n"
           "\\if :has_table\nselect app || '.' || name from django_migrations order by id;\n\\endif\n")
    return f"printf '%s' {q(sql)} | ({db.command('psql', '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1')})"


# --- running project code, sandboxed -------------------------------------------------------------------------

# What every sandboxed command (builds, management commands) gets besides the app's environment files.
SANDBOX_ENV = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PIP_NO_CACHE_DIR": "1"}


def sandboxed(layout: Layout, unit: str, user: str, workdir: str, argv: list[str], writable: list[str],
              env: dict[str, str] | None = None, terminal: bool = False) -> str:
    """`argv` in a transient systemd unit as `user`: the app's environment files read by systemd (as data),
    the system read-only but for `writable`, no way to gain privileges, its own /tmp. Output comes back; with
    `terminal`, the caller's terminal is the command's (an interactive command's prompts)."""
    return join(*sandbox_argv(layout, unit, user, workdir, argv, writable, env, terminal))


def sandbox_argv(layout: Layout, unit: str, user: str, workdir: str, argv: list[str], writable: list[str],
                 env: dict[str, str] | None = None, terminal: bool = False, properties: tuple[str, ...] = (),
                 collect: bool = True) -> list[str]:
    """`sandboxed` as an argument list, for a program that runs it. `properties`: more unit settings;
    without `collect`, a unit that failed stays loaded (until `systemctl reset-failed`) so that how it ended
    (systemd's Result=) can be read."""
    props = [f"WorkingDirectory={workdir}", f"EnvironmentFile=-{layout.env_file}",
             f"EnvironmentFile=-{layout.config_env}", "NoNewPrivileges=yes",
             "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "UMask=0022",
             *([f"ReadWritePaths={' '.join(writable)}"] if writable else []), *properties]
    variables = {**SANDBOX_ENV, **(env or {})}
    return ["systemd-run", "--quiet", "--pty" if terminal else "--pipe", "--wait", *(["--collect"] if collect else []),
            "--service-type=exec", f"--unit={unit}", f"--uid={user}", f"--gid={user}",
            *[f"--property={p}" for p in props],
            *[f"--setenv={k}={v}" for k, v in sorted(variables.items())],
            "--", *argv]


def release_environment(layout: Layout, release_id: str, release_dir: str) -> dict[str, str]:
    """What a release's own process gets besides the env file (the Gunicorn unit sets the same)."""
    return {"GANGWAY_RELEASE": release_id, "DJANGO_STATIC_ROOT": f"{release_dir}/static"}


def manage(layout: Layout, release_id: str, user: str, args: list[str], step: str, writable: list[str] = (),
           release_dir: str | None = None) -> str:
    """`manage.py ARGS` of a release, as `user`, sandboxed, with the app's environment."""
    release_dir = release_dir or layout.release(release_id)
    return sandboxed(layout, layout.build_unit(release_id, step), user, release_dir,
                     [f"{release_dir}/.venv/bin/python", "manage.py", *args], list(writable),
                     release_environment(layout, release_id, release_dir))


# --- building a release ------------------------------------------------------------------------------------

def env_file(layout: Layout, managed: dict[str, str], preview: bool = False, services: dict | None = None,
             if_exists: bool = False) -> str:
    """Create the environment file once (with a new secret key), then keep the managed keys up to date.
    With `preview`, write nothing: report the file as it is and as it would be (env_before, env_after). With
    `if_exists`, a missing file stays missing.

    The file remembers which keys gangway wrote (a comment line): one it no longer manages (a name taken out
    of the inventory's app.env, a service taken out of `services`) is removed, not left behind. Lines the
    operator added are left alone; the secret key is generated on the server and never printed. `services`
    (services.env_services) adds the services' URLs, made on the server from their password files. systemd
    reads the file (EnvironmentFile=): no shell ever sources it.
    """
    for key in managed:
        if not key.isidentifier():
            raise ValueError(f"{key!r} cannot be written to the environment file: it is not a variable name")
    lines = {key: envfile.encode_line(key, value) for key, value in managed.items()}  # ValueError: not one line
    # -B: no bytecode written, not even for a preview.
    return programs.fed(join("python3", "-B", "-c", programs.BOOTSTRAP), "env_file.py",
                        {"path": layout.env_file, "managed": lines, "mark": ENV_FILE_MARK, "preview": bool(preview),
                         "services": services, "if_exists": bool(if_exists),
                         "hidden": list(SERVICE_VARIABLES),
                         "report": shell.REPORT},
                        envfile.reader_source() + password_reader_source() + programs.source("env_file.py"))


def unpack(layout: Layout, release: Release, archive: str) -> str:
    """The release directory, owned by the build user, with the project unpacked into it by that user."""
    path, builder = layout.release(release.id), layout.build_user
    meta_dir = layout.release_meta(release.id).rsplit("/", 1)[0]
    return "\n".join([
        join("install", "-d", "-m", "755", "-o", builder, "-g", builder, path),
        join("chmod", "644", archive),
        as_user(builder, join("tar", "-xzf", archive, "-C", path, "--no-same-owner")),
        join("rm", "-f", archive),
        # Projects whose MEDIA_ROOT is BASE_DIR / "media" find the shared media there.
        f"[ -e {q(path + '/media')} ] || ln -s {q(layout.media)} {q(path + '/media')}",
        join("rm", "-rf", meta_dir),
        join("install", "-d", "-m", "755", meta_dir),
        shell.write_file(layout.release_meta(release.id), release.to_json(), "644", "root", "root"),
    ])


# How uv builds a venv: from uv's cache, copied (a hard link would share its file with the cache, which stays the
# build user's, and sealing the venv would change the cache's file too); with the server's own Python only, and
# no configuration but this (a uv.toml in the project or the build user's home is not read: pip read none either);
# TLS trusted as Debian's CA store says, as pip does (a proxy that inspects TLS has its CA there, not in uv's own).
UV_ENV = {"UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1", "UV_NO_PROGRESS": "1",
          "UV_SYSTEM_CERTS": "1"}


def venv(layout: Layout, release_id: str, requirements_hash: str, requirements_file: str, extra: list[str],
         env: dict[str, str]) -> str:
    """Reuse the venv built for the same requirements, or build it with uv as the build user (the dependencies'
    build code runs: never as root), from uv's cache, which keeps what earlier builds downloaded and built; a
    venv counts once it is sealed and `.complete` exists. Bytecode is compiled now, as pip did: the sealed venv
    cannot be written when the app first imports it."""
    target, release = layout.venv(requirements_hash), layout.release(release_id)
    builder = layout.build_user
    build_env = {**env, **UV_ENV, "UV_CACHE_DIR": layout.uv_cache}
    uv = ["sh", "-ec", '"$0" venv --quiet --python python3 "$1"; venv=$1; shift; '
          '"$0" pip install --quiet --compile-bytecode --python "$venv/bin/python" "$@"', UV, target, "-r", f"{release}/{requirements_file}", *extra]
    build = sandboxed(layout, layout.build_unit(release_id, "pip"), builder, release, uv,
                      [target, release, layout.uv_cache], build_env)
    return "\n".join([
        f"if [ -f {q(target + '/.complete')} ]; then {report(venv='reused')}; else",
        f"  rm -rf {q(target)}",
        f"  {join('install', '-d', '-m', '755', '-o', builder, '-g', builder, target)}",
        "  # shellcheck disable=SC2016  # the little script expands its own $0, $1 and $@, on the server",
        f"  if ! out=$({build} 2>&1); then {free_space_report(target)}; {keep_gate_output(release)}; "
        f"rm -rf {q(target)}; exit 1; fi",
        # Sealed: from now on nothing but root may change it.
        f"  chown -R root:root {q(target)}",
        f"  touch {q(target + '/.complete')}",
        f"  {report(venv='built')}",
        "fi",
        shell.symlink(f"{release}/.venv", target),
    ])


def free_space_report(path: str) -> str:
    """A report line with the free KiB where `path` lives, taken when a step failed and before anything is
    removed: a full disk does not always say "No space left on device" (ensurepip, for one, does not)."""
    return (f"printf '%s {{\"free_kib\": %s}}\\n' {q(shell.REPORT)} "
            f"\"$(df -Pk {q(path)} | awk 'NR == 2 {{print $4}}')\"")


def release_check(layout: Layout, release_id: str, program: str) -> str:
    """Django's deploy checks, collectstatic, the list of known migrations and the bytecode, in one Python
    process as the build user (`program`: project.check_program); then the release is sealed."""
    release, builder = layout.release(release_id), layout.build_user
    check = manage(layout, release_id, builder, ["shell", "--no-startup", "--interface", "python",
                                                 "--command", programs.BOOTSTRAP], "check", writable=[release])
    return "\n".join([
        f"if ! out=$({programs.fed(check + ' 2>&1', 'release_check.py', {}, program)}); then "
        f"{free_space_report(release)}; {keep_gate_output(release)}; exit 1; fi",
        "printf '%s\\n' \"$out\" | grep '^@gangway ' || true",
        f"chown -R root:root {q(release)}",
    ])


def settings_check(layout: Layout, release_id: str, program: str) -> str:
    """The release check's gates that the environment decides (the readiness check, Django's deploy checks), for
    a sealed release about to start with other variables (`fab config`): the same program as `release_check`,
    told so by its arguments, as the build user with nothing writable. Its output comes back as it is."""
    check = manage(layout, release_id, layout.build_user, ["shell", "--no-startup", "--interface", "python",
                                                           "--command", programs.BOOTSTRAP], "settings")
    return programs.fed(check, "release_check.py", {"sealed": True}, program)


def backup(layout: Layout, db: Client, name: str) -> str:
    """A custom-format dump (compressed; pg_restore can restore it) of the app's database, taken by its dumper and
    written by root into backups/, owner-only from the first byte. Written under a temporary name and renamed
    when complete: a failed dump leaves nothing that looks like a backup."""
    path = f"{layout.backups}/{name}.dump"
    part = f"{path}.part"
    dump = db.command("pg_dump", "--format=custom", dumper=True)
    return "\n".join([
        shell.watched(f"if ! (umask 077 && {dump} > {q(part)}); then rm -f {q(part)}; exit 1; fi",
                      f"stat -c %s {q(part)} 2>/dev/null || echo 0"),
        join("mv", "-f", part, path),
        report(backup=path),
    ])


def migrate(layout: Layout, release_id: str, app: str, release_dir: str | None = None) -> str:
    """Apply the release's migrations, as the app user (peer authentication)."""
    return manage(layout, release_id, app, ["migrate", "--noinput"], "migrate", release_dir=release_dir)


REVERSE_SCRIPT = TEMPLATES / "deploy" / "reverse_migrations.py"


def reverse_migrations(layout: Layout, release_id: str, app: str, remove: list[str],
                       release_dir: str | None = None) -> str:
    """Reverse `remove` ("app.name") with Django's executor, in the release at `release_dir` (the one whose code
    has their files), as the app user: one backwards plan for all apps, as `migrate` itself would run it."""
    command = manage(layout, release_id, app, ["shell", "--no-startup", "--interface", "python", "--command",
                                               programs.BOOTSTRAP], "reverse", release_dir=release_dir)
    return programs.fed(command, "reverse_migrations.py", {"remove": list(remove)}, REVERSE_SCRIPT.read_text())


def failed_releases_probe(layout: Layout) -> Probe:
    """The metadata of the releases kept in failed/ (`ID<TAB>JSON` lines, like the "releases" probe): read only
    when migrations must be reversed and no release in releases/ has their files."""
    return Probe("failed_releases", f"cd {q(layout.failed)} && for d in */; do d=${{d%/}}; "
                                    f"printf '%s\\t' \"$d\"; tr -d '\\n' < \"$d/{RELEASE_META}\" 2>/dev/null; "
                                    "echo; done",
                 lambda out, rc: out if rc == 0 else None)


# --- switching traffic ----------------------------------------------------------------------------------------

def start_and_check(layout: Layout, release_id: str, host: str, path: str, https: bool, timeout: int) -> str:
    """Start the release's Gunicorn and ask it for `path` over its own socket, with the app's real settings
    (its Host header must be in ALLOWED_HOSTS). Fails with its journal when it does not answer healthy."""
    unit = layout.unit(release_id)
    values = "\n".join(f"{name}={q(value)}" for name, value in (
        ("unit", unit), ("sock", layout.socket(release_id)), ("host", host), ("path", path),
        ("url", f"http://{host}{path}"), ("release", release_id)))
    proto = "-H 'X-Forwarded-Proto: https'" if https else ""
    return values + f"""
systemctl reset-failed "$unit" 2>/dev/null || true
if systemctl is-active --quiet "$unit"; then {report(standby=True)}; fi
# An instance that cannot start at all (a command line past Linux's argument limit, a missing program) has
# its reason only in the journal: say that it never started, and show it.
if ! started=$(systemctl start "$unit" 2>&1); then
  printf 'the instance %s failed to start (systemd: %s): %s\\n' "$unit" \\
    "$(systemctl show -p ActiveState --value "$unit")" "$started" >&2
  printf -- '--- the end of its log (journalctl -u %s):\\n' "$unit" >&2
  journalctl -u "$unit" -n 20 --no-pager -o cat >&2 || true
  systemctl stop "$unit" 2>/dev/null || true
  exit 4
fi
restarts0=$(systemctl show -p NRestarts --value "$unit")
deadline=$(( $(date +%s) + {int(timeout)} )); code=; body=; unhealthy_since=
while :; do
  if [ -S "$sock" ]; then
    body=$(curl -s --max-time 10 -w '\\n%{{http_code}} %{{redirect_url}}' --unix-socket "$sock" -H "Host: $host" {proto} "$url" || true)
    last=$(printf '%s' "$body" | tail -n 1); code=${{last%% *}}; location=${{last#* }}
    case "$code" in
      2??) break ;;
      000|"") ;;
      *) unhealthy_since=${{unhealthy_since:-$(date +%s)}} ;;
    esac
  fi
  restarts=$(systemctl show -p NRestarts --value "$unit")
  state=$(systemctl show -p ActiveState --value "$unit")
  # A wrong answer may be a moment of warming up; one that lasts {UNHEALTHY_GRACE_S} s is the answer.
  if [ "$state" = failed ] || [ "$state" = inactive ] || [ "${{restarts:-0}}" -gt "${{restarts0:-0}}" ] || \\
     [ "$(date +%s)" -ge "$deadline" ] || \\
     {{ [ -n "$unhealthy_since" ] && [ $(( $(date +%s) - unhealthy_since )) -ge {UNHEALTHY_GRACE_S} ]; }}; then
    if [ "$state" = failed ] || [ "$state" = inactive ] || [ "${{restarts:-0}}" -gt "${{restarts0:-0}}" ]; then
      printf 'the instance %s failed to start (systemd: %s, restarted %s time(s)): it never answered, see its log below\\n' "$unit" "$state" "$(( ${{restarts:-0}} - ${{restarts0:-0}} ))" >&2
    elif [ -n "$unhealthy_since" ] && [ -n "$location" ]; then
      printf 'release %s is not healthy: GET %s answered %s, a redirect to %s. A health check must answer 200 itself: set app.health_check in the inventory to a path that does, e.g. /healthz/\\n' "$release" "$path" "$code" "$location" >&2
    elif [ -n "$unhealthy_since" ]; then
      printf 'release %s is not healthy: GET %s answered %s\\n' "$release" "$path" "$code" >&2
    else
      printf 'release %s gave no healthy answer to GET %s within {int(timeout)} s\\n' "$release" "$path" >&2
    fi
    if [ "$code" = 400 ]; then
      printf "(400 from Django usually means the Host header '%s' is not in ALLOWED_HOSTS)\\n" "$host" >&2
    fi
    printf '%s\\n' "$body" | head -n -1 | head -c 1500 >&2
    # Python 3.13 underlines tracebacks with ~ and ^ lines: drop them, and show the errors before the tail.
    log=$(journalctl -u "$unit" -n 300 --no-pager -o cat | grep -vE '^[[:space:]~^]*$' || true)
    echo "--- errors in its log:" >&2
    printf '%s\\n' "$log" | grep -E '[A-Za-z]+(Error|Exception)([: ]|$)' | grep -v HaltServer | tail -n 8 >&2 || true
    printf -- '--- the end of its log (journalctl -u %s):\\n' "$unit" >&2
    printf '%s\\n' "$log" | tail -n 20 >&2
    systemctl stop "$unit"
    exit 4
  fi
  sleep 0.1
done
printf '%s {{"health": "%s"}}\\n' {q(shell.REPORT)} "$code"
"""


def backend_conf(layout: Layout) -> str:
    """nginx's proxy_pass once a release is live: the live link, resolved anew for every upstream connection
    (no upstream keepalive), so re-pointing the link moves traffic without reloading nginx.

    It also names, in a response header, the socket the live link resolves to as the request is answered
    ($realpath_root resolves the link for each request): that is how a deploy and `fab status` prove, through
    nginx, that the site is served by the release they mean, and not by the placeholder page (which has no
    such header) or a config nginx was never reloaded with. Only requests from the server itself get it (the
    checks ask over 127.0.0.1): a release id names the commit, which tells a stranger which version of the
    code runs (the reason the server's version is hidden too, `server_tokens off`). The header is set inside
    the `if` only, so visitors keep the server's own headers (add_header is inherited only by a level that
    has none)."""
    return (f"# Written by gangway: traffic goes to the release the live link points at.\n"
            f"proxy_pass http://unix:{layout.live_socket};\n"
            f"# For gangway's checks on the server: which release's socket answered (never sent to visitors).\n"
            f"root {layout.live_socket};\n"
            f"if ($remote_addr = 127.0.0.1) {{\n"
            f"\tadd_header {RELEASE_HEADER} $realpath_root;\n"
            f"}}\n")


def through_nginx(host: str, path: str, https: bool, *options: str) -> str:
    """The one way gangway asks nginx for a page: curl on the server itself, to 127.0.0.1, by the site's name
    (the Host header, and SNI over HTTPS), as a visitor's browser would; `options` go to curl before the URL.
    Used by the deploy's static-file and serving checks and by `fab status`."""
    if https:
        url, connect = f"https://{host}{path}", ["--resolve", f"{host}:443:127.0.0.1"]
    else:
        url, connect = f"http://{host}{path}", ["--connect-to", f"{host}:80:127.0.0.1:80"]
    return join("curl", "-s", "--noproxy", "*", "--max-time", "10", *connect, *options, url)


# What `through_nginx(..., "-w", SERVED)` prints: the status, then the socket of the release that answered
# (empty when nginx did not proxy to the live link: the placeholder page, an old config).
SERVED = f"%{{http_code}} %header{{{RELEASE_HEADER.lower()}}}"


def serving_check(layout: Layout, release_id: str, host: str, path: str, https: bool) -> list[str]:
    """Shell lines that ask nginx for `path` by the site's name and set ok_served's answer: true when it answered
    2xx from `release_id`'s own socket. Defines `ask_nginx` (fills $served) and `ok_served`."""
    if not RELEASE_ID.match(release_id):
        raise ValueError(f"{release_id!r} is not a release id")
    ask = through_nginx(host, path, https, "-k", "-o", "/dev/null", "-w", SERVED)
    return [f"want={q(layout.socket(release_id))}",
            f"ask_nginx() {{ served=$({ask}) || true; }}",
            'ok_served() { case "${served%% *}" in 2??) [ "${served#* }" = "$want" ] ;; *) return 1 ;; esac; }']


def standby_timer(layout: Layout, release_id: str) -> str:
    return f"{layout.app}-standby-{release_id}"


def stop_later(layout: Layout, release_id: str, minutes: int) -> str:
    """Stop a release's Gunicorn in `minutes` (now if 0). Until then it stays warm: a rollback to it is a
    switch, with nothing to start. It is not enabled, so a reboot ends its standby too."""
    unit = layout.unit(release_id)
    if minutes <= 0:
        return join("systemctl", "stop", "--no-block", unit)
    timer = standby_timer(layout, release_id)
    return (f"systemctl stop {q(timer + '.timer')} {q(timer + '.service')} 2>/dev/null || true\n"
            + join("systemd-run", "--quiet", f"--unit={timer}", f"--on-active={int(minutes)}min",
                   "--timer-property=AccuracySec=5s", "systemctl", "stop", unit))


def static_served(layout: Layout, release: Release, host: str, https: bool) -> str:
    """Fetch the release's sample static file through nginx, as a visitor would (by name, on this server), and
    compare it with the collected file: the pages' CSS and JS must answer before traffic moves."""
    sample = release.static_sample
    if not sample:
        return ""
    # In maintenance mode nginx answers 503 to everyone: the check would prove nothing, and is skipped.
    return "\n".join([
        f"if [ ! -f {q(layout.maintenance_flag)} ]; then",
        f"want=$(sha256sum < {q(layout.release(release.id) + '/static/' + sample['file'])} | cut -c1-64)",
        f"got=$({through_nginx(host, sample['url'], https, '-k')} | sha256sum | cut -c1-64)",
        "if [ \"$got\" != \"$want\" ]; then printf '%s\\n' "
        + q(f"its static files would not be served: GET {sample['url']} through nginx did not return the collected "
            f"file {sample['file']}. nginx serves /static/ from {layout.static}/, so STATIC_URL must be '/static/' "
            "and STATIC_ROOT the directory collectstatic fills (gangway sets DJANGO_STATIC_ROOT)")
        + " >&2; exit 5; fi",
        "fi",
    ])


def keep_warm(layout: Layout, live: str, standby: str | None, minutes: int) -> str:
    """After a switch: `standby` (the release a rollback would go to now) runs, with a timer that stops it in
    `minutes`; every other instance but the live one stops now, with its standby timer. What runs is read on
    the server, not assumed: instances an earlier switch left warm are found and stopped too. Without a standby
    (none, or `minutes` 0) only the live instance is left. Reports {"web_stopping": "UNIT ..."}: the instances
    whose stop systemd accepted (it runs on, as requests in flight finish)."""
    warm = standby if standby and minutes > 0 and standby != live else None
    prefix, timer_prefix = f"{layout.app}@", f"{layout.app}-standby-"
    lines = [f"gw_keep_live={q(layout.unit(live))}; gw_keep_warm={q(layout.unit(warm) if warm else '')}",
             "gw_web_stopping=",
             f"for gw_unit in $(systemctl list-units --plain --no-legend --state=active,activating,reloading "
             f"{q(layout.app + '@*.service')} | awk '{{print $1}}'); do",
             '  if [ "$gw_unit" = "$gw_keep_live" ] || [ "$gw_unit" = "$gw_keep_warm" ]; then continue; fi',
             '  systemctl stop --no-block "$gw_unit"',
             '  gw_web_stopping="$gw_web_stopping $gw_unit"',
             f'  gw_release=${{gw_unit#{prefix}}}; gw_release=${{gw_release%.service}}',
             f'  systemctl stop "{timer_prefix}$gw_release.timer" 2>/dev/null || true',
             "done",
             f"printf '%s {{\"web_stopping\": \"%s\"}}\\n' {q(shell.REPORT)} \"${{gw_web_stopping# }}\""]
    if warm:
        lines += [join("systemctl", "start", "--no-block", layout.unit(warm)), stop_later(layout, warm, minutes)]
    return "\n".join(lines)


def switch(layout: Layout, release: Release, old: str | None, history_line: dict, standby_minutes: int,
           backend_ready: bool, static_check: str = "", serving: tuple[str, str, bool] | None = None,
           standby: str | None = None, processes: tuple = ()) -> str:
    """Serve `release`: its static files join the shared ones, the live link and `current` flip atomically,
    and its unit is the one started at boot.

    nginx is touched only after the static-file check, so a release that fails it leaves nginx and its backend
    include as they were. When the include differs from `backend_conf` (the first deploy, or one written by an
    older gangway), it is written and checked by `nginx -t` before anything flips, and nginx is reloaded in the
    same step. With `serving` (the site's name, the health-check path, https), the site is then asked through
    nginx and must answer 2xx from this release's own socket: when it does not (nginx was never reloaded with
    the include the file holds), nginx is reloaded and asked again; if it still does not, the links flip back,
    a rewritten include is put back, and the switch fails. A switch on a server whose nginx already serves
    through the live link does not reload it. Then `standby`, the release a rollback would go to after this
    switch, is kept warm and every other instance stops (`keep_warm`); the release's `processes` (already started
    by processes.start_and_check) become the ones started at boot, and every other release's get a graceful stop
    (a standby runs its web instance only). Runs to the end even if the connection drops."""
    release_dir = layout.release(release.id)
    previous = f"{layout.nginx_backend}.gw-prev"
    steps = ["trap '' HUP PIPE",
             # The new live release must not be stopped by a standby timer left from an earlier switch.
             f"systemctl stop {q(standby_timer(layout, release.id) + '.timer')} 2>/dev/null || true",
             shell.write_file(layout.release_meta(release.id), release.to_json(), "644", "root", "root"),
             # The static files are served from the shared directory before any link flips.
             # Hashed files are immutable; the newest release's copy of an unhashed name wins.
             f"cp -a {q(release_dir + '/static/.')} {q(layout.static + '/')}",
             static_check]
    if not backend_ready:
        steps += [f"cp -a {q(layout.nginx_backend)} {q(previous)} 2>/dev/null || true",
                  shell.write_file(layout.nginx_backend, backend_conf(layout), "644", "root", "root"),
                  f"if ! out=$(nginx -t 2>&1); then mv -f {q(previous)} {q(layout.nginx_backend)}; "
                  f"printf 'nginx rejected the switch: %s\\n' \"$out\" >&2; exit 3; fi"]
    steps += [shell.symlink(layout.live_socket, layout.socket(release.id)),
              shell.symlink(layout.current, release_dir),
              *(reload_nginx() if not backend_ready else [])]
    if serving:
        steps.append(_served_by(layout, release.id, old, *serving, backend_rewritten=not backend_ready))
    if not backend_ready:
        steps.append(join("rm", "-f", previous))
    steps += start_at_boot(layout, release.id)
    if old and old != release.id:
        steps.append(not_at_boot(layout, old))
    steps += process_commands.after_switch(layout, release.id, processes)
    # What stays warm is the release a rollback would go to now (`standby`), whichever was live before.
    steps += [keep_warm(layout, release.id, standby, standby_minutes), history(layout, history_line)]
    return "\n".join(steps)


def _served_by(layout: Layout, release_id: str, old: str | None, host: str, path: str, https: bool,
               backend_rewritten: bool) -> str:
    """After the links flipped: the site, asked through nginx by its name, must answer from `release_id`.
    nginx is reloaded once if it does not (what it runs may not be what backend.conf says); if it still does
    not, the switch is undone and fails (exit 6). Skipped in maintenance mode (nginx answers 503 to all)."""
    if old and old != release_id:
        back = [shell.symlink(layout.live_socket, layout.socket(old)),
                shell.symlink(layout.current, layout.release(old))]
    else:
        back = [join("rm", "-f", layout.live_socket, layout.current)]
    if backend_rewritten:
        back += [f"mv -f {q(layout.nginx_backend + '.gw-prev')} {q(layout.nginx_backend)}", *reload_nginx()]
    where = f"GET {path} through nginx by the name {host}"
    placeholder = (f"nginx does not serve {release_id}, even after a reload: {where} answered %s with no release "
                   "behind it: the placeholder page, or a config that does not proxy to the live link. "
                   "sudo nginx -T shows what nginx runs: the site's server block must include "
                   f"{layout.nginx_backend}\\n")
    other = f"nginx does not serve {release_id}: {where} answered %s from %s\\n"
    indent = "\n    "
    return "\n".join([
        f"if [ ! -f {q(layout.maintenance_flag)} ]; then",
        *serving_check(layout, release_id, host, path, https),
        "  repaired=false",
        "  ask_nginx",
        "  if ! ok_served; then",
        "    # What nginx runs is not what backend.conf says (a change it was never reloaded with): reload it.",
        "    if nginx -t 2>/dev/null; then",
        "    " + indent.join(reload_nginx()),
        "    fi",
        "    repaired=true",
        "    ask_nginx",
        "  fi",
        "  if ! ok_served; then",
        "    code=${served%% *}; from=${served#* }",
        "    " + indent.join(back),
        '    if [ -z "$from" ]; then',
        f"      printf {q(placeholder)} \"$code\" >&2",
        "    else",
        f"      printf {q(other)} \"$code\" \"$from\" >&2",
        "    fi",
        "    exit 6",
        "  fi",
        f"  printf '%s {{\"through_nginx\": \"%s\", \"repaired\": %s}}\\n' {q(shell.REPORT)} \"${{served%% *}}\" "
        "\"$repaired\"",
        "fi",
    ])


def reload_nginx() -> list[str]:
    """Reload nginx and return once its old workers are gone: `systemctl reload` returns while they still take
    requests, and "deployed" must mean that the next request reaches the release."""
    return ["old_workers=$(pgrep -P \"$(cat /run/nginx.pid)\" | tr '\\n' ' ')",
            "systemctl reload nginx",
            "for _ in $(seq 1 300); do alive=; for p in $old_workers; do kill -0 \"$p\" 2>/dev/null && alive=1; "
            "done; [ -z \"$alive\" ] && break; sleep 0.05; done"]


def start_at_boot(layout: Layout, release_id: str) -> list[str]:
    """The release's unit starts at boot: the link `systemctl enable` makes, made directly (the running
    manager needs no reload for it, and systemctl then warns about nothing)."""
    link = layout.boot_link(release_id)
    return [join("install", "-d", "-m", "755", link.rsplit("/", 1)[0]), join("ln", "-sfn", layout.unit_path, link)]


def not_at_boot(layout: Layout, release_id: str) -> str:
    return join("rm", "-f", layout.boot_link(release_id))


def history(layout: Layout, line: dict) -> str:
    return f"printf '%s\\n' {q(json.dumps(line, sort_keys=True))} >> {q(layout.history)}"


def set_aside(layout: Layout, release: Release, history_line: dict, keep: bool = True) -> str:
    """Stop a failed release (its web instance and its processes) and move it to failed/ (sealed), where it is kept for inspection; or remove it
    (`keep=False`, e.g. when the disk is full)."""
    path = layout.release(release.id)
    if keep:
        keep_it = [f"if [ -d {q(path)} ]; then",
                   f"  {join('install', '-d', '-m', '755', path + '/' + RELEASE_META.rsplit('/', 1)[0])}",
                   "  " + shell.write_file(layout.release_meta(release.id), release.to_json(), "644", "root",
                                           "root").replace("\n", "\n  "),
                   f"  chown -R root:root {q(path)}",
                   f"  mv -fT {q(path)} {q(layout.failed + '/' + release.id)}",
                   "fi"]
    else:
        keep_it = [join("rm", "-rf", "--", path)]
    return "\n".join([
        join("systemctl", "stop", layout.unit(release.id)) + " 2>/dev/null || true",
        not_at_boot(layout, release.id),
        *process_commands.stop_release(layout, release.id),
        *keep_it,
        history(layout, history_line),
    ])


def upload_path(layout: Layout, release_id: str) -> str:
    return f"{layout.releases}/{release_id}.tar.gz"


def cleanup(layout: Layout, stop: list[str], remove_releases: list[str], remove_failed: list[str],
            remove_venvs: list[str], remove_backups: list[str] = (), uploading: str | None = None) -> str:
    """Stop stray units and remove what is no longer kept; each path is named, nothing is globbed but the
    uploads and build units an interrupted deploy left (`uploading` is this deploy's own upload)."""
    lines = [
        # Build steps and release hooks an interrupted deploy left running, and its half-uploaded archives.
        f"systemctl stop {q(layout.app + '-build-*')} {q(layout.hook_unit_prefix + '*')} 2>/dev/null || true",
        join("find", layout.releases, "-maxdepth", "1", "-type", "f", "-name", "*.tar.gz",
             *(["!", "-name", uploading.rsplit("/", 1)[1]] if uploading else []), "-delete"),
        *[not_at_boot(layout, r) for r in remove_releases],
        *[line for r in remove_releases for line in process_commands.stop_release(layout, r)],
        *[join("systemctl", "stop", "--no-block", layout.unit(r)) for r in stop],
    ]
    paths = ([layout.release(r) for r in remove_releases] + [f"{layout.failed}/{r}" for r in remove_failed]
             + [layout.venv(v) for v in remove_venvs] + [f"{layout.backups}/{b}" for b in remove_backups])
    if paths:
        lines.append(join("rm", "-rf", "--", *paths))
    if remove_venvs:  # what only they used is now unreachable in uv's cache (the requirements changed)
        lines.append(uv_cache_prune(layout))
    return "\n".join(lines)


def uv_cache_prune(layout: Layout) -> str:
    """Remove what uv's cache holds that nothing reaches any more, as the cache's owner."""
    return as_user(layout.build_user, join("env", "UV_NO_CONFIG=1", UV, "cache", "prune", "--quiet",
                                           "--cache-dir", layout.uv_cache))


def prune_static(layout: Layout, kept_releases: list[str]) -> str:
    """Remove from the shared static directory what no kept release has any more."""
    return programs.python("prune_static.py", {"root": layout.static,
                                               "releases": [layout.release(r) + "/static" for r in kept_releases]})


# --- the output of a failed gate ------------------------------------------------------------------------------

# Where a release keeps the whole output of the gate it failed (pip, the release check): beside its metadata,
# so a failed release set aside in failed/ carries it along.
GATE_LOG = RELEASE_META.rsplit("/", 1)[0] + "/build.log"
# How much of that output comes back over SSH to be read (the whole of a traceback chain, a pip report).
GATE_OUTPUT_LINES = 300


def gate_log(release_dir: str) -> str:
    return f"{release_dir}/{GATE_LOG}"


def keep_gate_output(release_dir: str) -> str:
    """For a gate that failed with its output in $out: pass on the report lines that name the part of it that
    was running (only those: the tool's own reports, of free space say, stay the tool's), seal the release (the
    build user can write there no more), keep the whole output in it, readable by root only, and print its end
    on stderr. A metadata directory the build user replaced (by a link, say) is made anew first: nothing is
    written through it."""
    meta = release_dir + "/" + RELEASE_META.rsplit("/", 1)[0]
    log = gate_log(release_dir)
    return "; ".join([
        f"printf '%s\\n' \"$out\" | grep '^{shell.REPORT} {{\"gate\": ' || true",
        f"chown -R root:root {q(release_dir)} || true",
        f"{{ if [ -L {q(meta)} ] || [ ! -d {q(meta)} ]; then rm -rf {q(meta)}; install -d -m 755 {q(meta)}; fi; "
        f"rm -f {q(log)}; (umask 077; printf '%s\\n' \"$out\" > {q(log)}); }} || true",
        f"printf '%s\\n' \"$out\" | tail -n {GATE_OUTPUT_LINES} >&2",
    ])


# --- operating the live release: fab manage, fab config, fab import-data ----------------------------------------

def manage_live(layout: Layout, release_id: str, app: str, args: list[str], unit: str, terminal: bool = False,
                upload: str | None = None) -> str:
    """`manage.py ARGS` in a release as the app user, with the app's environment, sandboxed like a build step but
    with the media directory writable (loaddata, for one, may write files there). `upload` (a file sent for the
    command) becomes the app user's for the command and is removed after it. Exits with the command's status."""
    release_dir = layout.release(release_id)
    command = sandboxed(layout, unit, app, release_dir, [f"{release_dir}/.venv/bin/python", "manage.py", *args],
                        [layout.media], release_environment(layout, release_id, release_dir), terminal=terminal)
    if not upload:
        return command
    return "\n".join([f"chown {q(app + ':' + app)} {q(upload)} || {{ rm -f {q(upload)}; exit 1; }}",
                      f"if {command}; then rc=0; else rc=$?; fi",
                      join("rm", "-f", upload),
                      '(exit "$rc")'])  # the command's status, also as a step of a script (set -e)


# An upload is written under NAME.part and renamed when complete. What a cut connection left is removed by the
# next upload: a .part older than this (no upload takes that long while the lock is held), and a complete
# upload (a file handed to `fab manage --file`, a download's copy) older than UPLOAD_STALE_MIN.
UPLOAD_PART_STALE_MIN = 60
UPLOAD_STALE_MIN = 360
UPLOAD_PART = ".part"


def stale_uploads(layout: Layout) -> str:
    """Remove the uploads a cut connection left in releases/ (see UPLOAD_PART_STALE_MIN); never fails."""
    return (join("find", layout.releases, "-maxdepth", "1", "-type", "f", "-name", ".upload-*", "(",
                 "(", "-name", f"*{UPLOAD_PART}", "-mmin", f"+{UPLOAD_PART_STALE_MIN}", ")", "-o",
                 "-mmin", f"+{UPLOAD_STALE_MIN}", ")", "-delete") + " 2>/dev/null || true")


def private_upload(path: str) -> str:
    """An empty file only its owner can read, for an upload to fill (SFTP keeps the mode of a file it
    overwrites): run as the logged-in user."""
    return f"umask 077 && : > {q(path)}"


def upload_start(layout: Layout, part: str) -> str:
    """Before an upload, as the logged-in user: the leftovers of cut uploads removed, the owner-only file the
    upload fills (`part`, renamed by `upload_finish` once complete), and the free space where it lands."""
    return "\n".join([stale_uploads(layout), private_upload(part), free_space_report(layout.releases)])


def upload_finish(part: str, path: str) -> str:
    """A complete upload under its final name (the same directory: an atomic rename)."""
    return join("mv", "-f", part, path)


def upload_abort(layout: Layout, part: str) -> str:
    """A failed upload removed, and the free space it left (a full disk is named with it); never fails."""
    return f"rm -f {q(part)} || true\n{free_space_report(layout.releases)} || true"


def config_probes(layout: Layout) -> list[Probe]:
    """The app's own variables file as it is (empty when there is none), and whether the Gunicorn unit reads it
    (a server provisioned before `fab config` existed does not)."""
    return [Probe("config", f"cat {q(layout.config_env)}", lambda out, rc: out if rc == 0 else ""),
            Probe("unit_reads_config", join("grep", "-qF", f"EnvironmentFile=-{layout.config_env}", layout.unit_path),
                  lambda out, rc: rc == 0)]


def config_install(layout: Layout, upload: str) -> str:
    """Make the uploaded file the app's variables file (root's, 0600), keeping the one it replaces for
    `config_restore`. The upload is gone afterwards, whatever happens."""
    path, previous = layout.config_env, layout.config_env + ".gw-prev"
    return "\n".join([
        f"if [ -e {q(path)} ]; then cp -p {q(path)} {q(previous)}; else rm -f {q(previous)}; fi",
        f"if ! install -m 600 -o root -g root {q(upload)} {q(path + '.gw-new')}; then "
        f"rm -f {q(upload)} {q(path + '.gw-new')}; exit 1; fi",
        join("rm", "-f", upload),
        join("mv", "-f", path + ".gw-new", path),
    ])


def config_restore(layout: Layout) -> str:
    """Put back the file `config_install` replaced (none, if there was none)."""
    path, previous = layout.config_env, layout.config_env + ".gw-prev"
    return f"if [ -e {q(previous)} ]; then mv -f {q(previous)} {q(path)}; else rm -f {q(path)}; fi"


def config_kept(layout: Layout) -> str:
    return join("rm", "-f", layout.config_env + ".gw-prev")


def clone_release(layout: Layout, live_id: str, release: Release) -> str:
    """`release` as a copy of the live release's files (hard links: no space, no build; releases are sealed and
    never written in place), with its own metadata: the same code, to be started anew."""
    return "\n".join([join("cp", "-al", layout.release(live_id), layout.release(release.id)),
                      shell.write_file(layout.release_meta(release.id), release.to_json(), "644", "root", "root")])


def remove_file(path: str) -> str:
    return join("rm", "-f", path)


def count_rows(layout: Layout, release_id: str, app: str, unit: str, models: list[str], every: bool = False) -> str:
    """How many rows each model ("app_label.model") has in the server's database, as the live code sees it (with
    `every`, each of the code's models too): a report {"rows": {model: count}, "unknown": [models the code does
    not have]} (templates/programs/count_rows.py, run in the live release's Django shell)."""
    command = manage_live(layout, release_id, app, ["shell", "--command", programs.BOOTSTRAP], unit)
    return programs.fed(command, "count_rows.py", {"models": list(models), "every": bool(every)})


def load_data(layout: Layout, release_id: str, db: Client, unit: str, upload: str, replace: bool,
              backup_name: str) -> list[tuple[str, str]]:
    """The steps that load an uploaded fixture: with `replace`, a backup and then an emptied database first."""
    app, steps = db.app, []
    if replace:
        steps += [("backup", backup(layout, db, backup_name)),
                  ("flush", manage_live(layout, release_id, app, ["flush", "--noinput"], unit))]
    steps.append(("loaddata", manage_live(layout, release_id, app, ["loaddata", upload], unit, upload=upload)))
    return steps


def unpack_media(layout: Layout, app: str, upload: str, replace: bool) -> str:
    """Unpack an uploaded tar of media files into shared/media as the app user (templates/programs/unpack_media.py):
    into a hidden directory there first, then each file renamed into place (no partial file is ever visible), a
    file the server already has kept unless `replace`. Reports {"media": {"added": n, "replaced": n, "kept": n}};
    the upload is removed."""
    unpack = programs.fed(as_user(app, "cd / && " + join("python3", "-c", programs.BOOTSTRAP)), "unpack_media.py",
                          {"media": layout.media, "archive": upload, "replace": bool(replace)})
    return "\n".join([f"chown {q(app + ':' + app)} {q(upload)} || {{ rm -f {q(upload)}; exit 1; }}",
                      f"if ! {unpack}then rm -f {q(upload)}; exit 1; fi",
                      join("rm", "-f", upload)])
