"""The shell scripts a deploy or rollback runs on the server, built as plain strings (nothing here runs).

Each function returns one script, so each phase of a deploy costs one round trip.
"""

from __future__ import annotations

import json

from tasks import shell
from tasks.layout import RELEASE_META, Layout
from tasks.releases import Release
from tasks.shell import as_user, q
from tasks.steps import Probe

HEALTH_FAILED = 4
CHECK_FAILED = 6
BUILD_FAILED = 7
UNHEALTHY_GRACE_S = 3


# --- facts --------------------------------------------------------------------------------------------------

def state_probes(layout: Layout) -> list[Probe]:
    """Everything a deploy or rollback needs to know, for one gather."""
    app = layout.app
    meta = RELEASE_META
    return [
        Probe("releases", f"cd {q(layout.releases)} && for d in */; do d=${{d%/}}; "
                          f"printf '%s\\t' \"$d\"; tr -d '\\n' < \"$d/{meta}\" 2>/dev/null; echo; done",
              lambda out, rc: out),
        Probe("failed", f"ls -1 {q(layout.failed)}", lambda out, rc: out.split()),
        Probe("backend", f"cat {q(layout.nginx_backend)}", lambda out, rc: out if rc == 0 else None),
        Probe("running", f"systemctl list-units --plain --no-legend --state=active {q(app + '@*.service')} "
                         "| awk '{print $1}'",
              lambda out, rc: [u[len(app) + 1:-len(".service")] for u in out.split()]),
        Probe("history", f"tail -n 500 {q(layout.history)}", lambda out, rc: out),
        Probe("venvs", f"cd {q(layout.venvs)} && for v in */; do [ -f \"$v.complete\" ] && echo \"${{v%/}}\"; done",
              lambda out, rc: out.split()),
        Probe("python", "python3 -c 'import sys; print(sys.version.split()[0])'", lambda out, rc: out.strip()),
        Probe("provisioned", f"test -f {q(layout.unit_path)} && test -d {q(layout.state)}",
              lambda out, rc: rc == 0),
        Probe("applied", applied_migrations(app), lambda out, rc: out.split()),
        Probe("backups", f"cd {q(layout.backups)} && stat -c '%n %s %y' -- *.dump",
              lambda out, rc: out.splitlines() if rc == 0 else []),
    ]


def applied_migrations(app: str) -> str:
    """The migrations the database has applied, as app.name lines in the order they were applied."""
    sql = "select app || '.' || name from django_migrations order by id"
    # Before the first migrate there is no such table: psql fails, and that means "none applied".
    return f"cd / && {as_user(app, f'psql -X -q -t -A -d {q(app)} -c {q(sql)} 2>/dev/null')} || true"


# --- building a release ------------------------------------------------------------------------------------

def manage(layout: Layout, release_id: str, user: str, args: str) -> str:
    """`manage.py ARGS` in a release, as `user`, with the app's environment file loaded (as systemd would)."""
    release = layout.release(release_id)
    inner = (f"set -a; . {q(layout.env_file)}; set +a; "
             f"export GANGWAY_RELEASE={q(release_id)} DJANGO_STATIC_ROOT={q(release + '/static')}; "
             f"cd {q(release)} && exec runuser -u {q(user)} -- .venv/bin/python manage.py {args}")
    return f"sh -c {q(inner)}"


def env_file(layout: Layout, managed: dict[str, str]) -> str:
    """Create the environment file once (with a new secret key), then keep the managed keys up to date.

    Lines the operator added are left alone; the secret key is generated on the server and never printed.
    """
    program = f"""
import os, re, secrets, sys
path = {layout.env_file!r}
managed = {managed!r}
lines = open(path).read().splitlines() if os.path.exists(path) else []
keys = {{re.split(r"\\s*=", l, maxsplit=1)[0].strip() for l in lines if "=" in l and not l.lstrip().startswith("#")}}
if "DJANGO_SECRET_KEY" not in keys:
    lines.append("DJANGO_SECRET_KEY='%s'" % secrets.token_urlsafe(50))
out = []
for line in lines:
    key = re.split(r"\\s*=", line, maxsplit=1)[0].strip()
    out.append(f"{{key}}='{{managed.pop(key)}}'" if key in managed else line)
out += [f"{{k}}='{{v}}'" for k, v in managed.items()]
text = "\\n".join(out) + "\\n"
if not os.path.exists(path) or open(path).read() != text:
    tmp = path + ".gw-new"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    os.replace(tmp, path)
"""
    return f"python3 -c {q(program)}"


def unpack(layout: Layout, release: Release, archive: str, deploy_user: str) -> str:
    path = layout.release(release.id)
    return "\n".join([
        shell.join("install", "-d", "-o", deploy_user, "-g", deploy_user, path,
                   layout.release_meta(release.id).rsplit("/", 1)[0]),
        as_user(deploy_user, f"tar -xzf {q(archive)} -C {q(path)}") + f" && rm -f {q(archive)}",
        # Projects whose MEDIA_ROOT is BASE_DIR / "media" find the shared media there.
        f"[ -e {q(path + '/media')} ] || ln -s {q(layout.media)} {q(path + '/media')}",
        shell.write_file(layout.release_meta(release.id), release.to_json(), "644", deploy_user, deploy_user),
    ])


def venv(layout: Layout, release_id: str, requirements_hash: str, requirements_file: str, extra: str,
         deploy_user: str, env: dict[str, str]) -> str:
    """Reuse the venv built for the same requirements, or build it; a venv counts once `.complete` exists."""
    target = layout.venv(requirements_hash)
    release = layout.release(release_id)
    pip = (f"python3 -m venv {q(target)} && "
           f"{q(target)}/bin/pip install --quiet --disable-pip-version-check --no-input "
           f"-r {q(release + '/' + requirements_file)} {extra} && touch {q(target + '/.complete')}")
    build = (f"rm -rf {q(target)}; echo building the Python environment; "
             f"if ! out=$({as_user(deploy_user, shell.with_env(env, pip))} 2>&1); then "
             f"echo \"$out\" | tail -n 30 >&2; rm -rf {q(target)}; exit {BUILD_FAILED}; fi")
    return "\n".join([
        f"if [ -f {q(target + '/.complete')} ]; then echo reusing the Python environment; else {build}; fi",
        shell.symlink(f"{release}/.venv", target),
    ])


def release_check(layout: Layout, release_id: str, deploy_user: str, script: str) -> str:
    """Django's deploy checks, collectstatic and the list of known migrations, in one Python process; then
    the project's bytecode, compiled once here because the app user may not write into its release."""
    release = layout.release(release_id)
    inner = manage(layout, release_id, deploy_user, f"shell --no-startup --interface python "
                                                    f"--command {q(script)}")
    compile_ = as_user(deploy_user, f"{q(release)}/.venv/bin/python -m compileall -q -x '/(\\.venv|static|media|node_modules)/' "
                                    f"{q(release)} >/dev/null")
    return (f"if ! out=$({inner} 2>&1); then echo \"$out\" | tail -n 40 >&2; exit {CHECK_FAILED}; fi; "
            f"{compile_} || true; printf '%s\\n' \"$out\"")


def backup(layout: Layout, app: str, name: str) -> str:
    """A custom-format dump (pg_restore can restore it), taken as postgres, kept in backups/."""
    path = f"{layout.backups}/{name}.dump"
    return (f"cd / && runuser -u postgres -- pg_dump --format=custom --file={q(path)} {q(app)} && "
            f"echo {q(path)}")


def migrate(layout: Layout, release_id: str, app: str, targets: dict[str, str] | None = None) -> str:
    """Apply (or, with targets, reverse down to) migrations, as the app user (peer authentication)."""
    if not targets:
        return manage(layout, release_id, app, "migrate --noinput")
    return "\n".join(manage(layout, release_id, app, f"migrate --noinput {q(a)} {q(t)}")
                     for a, t in targets.items())


# --- switching traffic ----------------------------------------------------------------------------------------

def start_and_check(layout: Layout, release_id: str, host: str, path: str, https: bool, timeout: int) -> str:
    """Start the release's Gunicorn and ask it for `path` over its own socket, with the app's real settings
    (its Host header must be in ALLOWED_HOSTS). Fails with its journal when it does not answer healthy."""
    unit, sock = layout.unit(release_id), layout.socket(release_id)
    headers = f"-H {q('Host: ' + host)}" + (" -H 'X-Forwarded-Proto: https'" if https else "")
    return f"""systemctl reset-failed {q(unit)} 2>/dev/null || true
if systemctl is-active --quiet {q(unit)}; then echo "was still running (standby)"; fi
systemctl start {q(unit)}
restarts0=$(systemctl show -p NRestarts --value {q(unit)})
deadline=$(( $(date +%s) + {timeout} )); code=; body=; unhealthy_since=
while :; do
  if [ -S {q(sock)} ]; then
    body=$(curl -s --max-time 10 -w '\\n%{{http_code}}' --unix-socket {q(sock)} {headers} {q('http://' + host + path)} || true)
    code=$(printf '%s' "$body" | tail -n 1)
    case "$code" in
      2??|3??) break ;;
      000|"") ;;
      *) unhealthy_since=${{unhealthy_since:-$(date +%s)}} ;;
    esac
  fi
  restarts=$(systemctl show -p NRestarts --value {q(unit)})
  state=$(systemctl show -p ActiveState --value {q(unit)})
  # A wrong answer may be a moment of warming up; one that lasts {UNHEALTHY_GRACE_S} s is the answer.
  if [ "$state" = failed ] || [ "${{restarts:-0}}" -gt "${{restarts0:-0}}" ] || [ $(date +%s) -ge $deadline ] || \
     {{ [ -n "$unhealthy_since" ] && [ $(( $(date +%s) - unhealthy_since )) -ge {UNHEALTHY_GRACE_S} ]; }}; then
    if [ "$state" = failed ] || [ "${{restarts:-0}}" -gt "${{restarts0:-0}}" ]; then
      echo "release {release_id} crashed while starting (systemd: $state)" >&2
    elif [ -n "$unhealthy_since" ]; then
      echo "release {release_id} is not healthy: GET {path} answered $code" >&2
    else
      echo "release {release_id} gave no healthy answer to GET {path} within {timeout} s" >&2
    fi
    [ "$code" = 400 ] && echo "(400 from Django usually means the Host header '{host}' is not in ALLOWED_HOSTS)" >&2
    printf '%s\\n' "$body" | head -n -1 | head -c 1500 >&2
    # Python 3.13 underlines tracebacks with ~ and ^ lines: drop them, and show the errors before the tail.
    log=$(journalctl -u {q(unit)} -n 300 --no-pager -o cat | grep -vE '^[[:space:]~^]*$')
    echo "--- errors in its log:" >&2
    printf '%s\\n' "$log" | grep -E '[A-Za-z]+(Error|Exception)([: ]|$)' | grep -v HaltServer | tail -n 8 >&2
    echo "--- the end of its log (journalctl -u {unit}):" >&2
    printf '%s\\n' "$log" | tail -n 20 >&2
    systemctl stop {q(unit)}
    exit {HEALTH_FAILED}
  fi
  sleep 0.1
done
echo "healthy: GET {path} -> $code"
"""


def backend_conf(layout: Layout, release_id: str) -> str:
    return (f"# Written by gangway on deploy and rollback: the release nginx sends traffic to.\n"
            f"# live: {release_id}\n"
            f"proxy_pass http://unix:{layout.socket(release_id)};\n")


def standby_timer(layout: Layout, release_id: str) -> str:
    return f"{layout.app}-standby-{release_id}"


def stop_later(layout: Layout, release_id: str, minutes: int) -> str:
    """Stop a release's Gunicorn in `minutes` (now if 0). Until then it stays warm: a rollback to it is a
    switch, with nothing to start."""
    unit = layout.unit(release_id)
    if minutes <= 0:
        return f"systemctl stop --no-block {q(unit)}"
    timer = standby_timer(layout, release_id)
    return (f"systemctl stop {q(timer + '.timer')} {q(timer + '.service')} 2>/dev/null || true\n"
            f"systemd-run --quiet --unit={q(timer)} --on-active={minutes}min --timer-property=AccuracySec=5s "
            f"systemctl stop {q(unit)}")


def switch(layout: Layout, release: Release, old: str | None, history_line: dict, deploy_user: str,
           standby_minutes: int) -> str:
    """Point nginx and `current` at the new release, wait until no old nginx worker is left (so no request
    reaches the old release once this returns), then let the old release go (after its standby time). Runs
    to the end even if the connection drops."""
    previous_backend = f"{layout.nginx_backend}.gw-prev"
    new_timer = standby_timer(layout, release.id)
    stop_old = stop_later(layout, old, standby_minutes) if old and old != release.id else ""
    return "\n".join([
        "trap '' HUP PIPE",
        # The new live release must not be stopped by a standby timer left from an earlier switch.
        f"systemctl stop {q(new_timer + '.timer')} 2>/dev/null || true",
        shell.write_file(layout.release_meta(release.id), release.to_json(), "644", deploy_user, deploy_user),
        shell.symlink(layout.current, layout.release(release.id)),
        f"cp -a {q(layout.nginx_backend)} {q(previous_backend)} 2>/dev/null || true",
        shell.write_file(layout.nginx_backend, backend_conf(layout, release.id), "644", "root", "root"),
        f"if ! out=$(nginx -t 2>&1); then mv -f {q(previous_backend)} {q(layout.nginx_backend)}; "
        f"echo \"nginx rejected the switch: $out\" >&2; exit 3; fi",
        f"rm -f {q(previous_backend)}",
        "old_workers=$(pgrep -P \"$(cat /run/nginx.pid)\" | tr '\\n' ' ')",
        "systemctl reload nginx",
        "for i in $(seq 1 300); do alive=; for p in $old_workers; do kill -0 \"$p\" 2>/dev/null && alive=1; done; "
        "[ -z \"$alive\" ] && break; sleep 0.05; done",
        stop_old,
        history(layout, history_line),
    ])


def history(layout: Layout, line: dict) -> str:
    return f"printf '%s\\n' {q(json.dumps(line, sort_keys=True))} >> {q(layout.history)}"


def set_aside(layout: Layout, release: Release, deploy_user: str, history_line: dict) -> str:
    """Stop a failed release and move it to failed/, where it is kept for inspection."""
    return "\n".join([
        f"systemctl stop {q(layout.unit(release.id))} 2>/dev/null || true",
        shell.write_file(layout.release_meta(release.id), release.to_json(), "644", deploy_user, deploy_user),
        f"mv -fT {q(layout.release(release.id))} {q(layout.failed + '/' + release.id)}",
        history(layout, history_line),
    ])


def cleanup(layout: Layout, stop: list[str], remove_releases: list[str], remove_failed: list[str],
            remove_venvs: list[str]) -> str:
    """Stop stray units and remove what is no longer kept; each path is named, nothing is globbed."""
    lines = [f"systemctl stop --no-block {q(layout.unit(r))}" for r in stop]
    paths = ([layout.release(r) for r in remove_releases] + [f"{layout.failed}/{r}" for r in remove_failed]
             + [layout.venv(v) for v in remove_venvs])
    if paths:
        lines.append("rm -rf -- " + " ".join(q(p) for p in paths))
    return "\n".join(lines) or "true"
