"""`fab status`: one screen per server saying whether the site is well, gathered in one round trip.

The probes (what to ask the server) and the checks (what the answers mean) are pure functions: `status_probes`
builds the shell, `checks` turns the facts into lines, each `ok`, `WARN` or `FAIL` with a short reason. Only
`status_on` talks to the server. The task exits 1 when a line says WARN, 2 when one says FAIL, so it can run
from cron or CI.
"""

from __future__ import annotations

from dataclasses import dataclass


from .. import defaults, timestamps
from ..commands import media, release as commands
from ..timestamps import age
from ..inventory import Host, Inventory
from ..layout import Layout
from ..commands.release import LOW_SPACE_KIB
from ..facts import backups as listing
from ..facts.releases import ServerState
from ..session.run import Session, server_probes, server_state
from ..commands.database import Client, db_address, reach_probe
from ..commands.services import REDIS, ping
from ..commands.shell import join, parse_reports, q
from ..layout import REDIS_SECRET, REDIS_UNIT
from ..facts.steps import Probe

OK, WARN, FAIL = "ok", "WARN", "FAIL"
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}

# curl's exit status when the certificate is not signed by a CA it trusts (or is not for the name asked).
CURL_UNTRUSTED = 60


@dataclass(frozen=True)
class Check:
    level: str
    name: str
    detail: str


@dataclass(frozen=True)
class Timer:
    unit: str
    active: str         # the timer's own state: active when it is scheduled
    last: int | None    # when its service last ran (Unix time), None when no run is known
    next: int | None    # when it fires next, None if not scheduled
    result: str         # that run's result as systemd says it (success, exit-code, ...); "" when no run is known
    status: int | None = None   # the run's exit status, when systemd knows it
    running: bool = False       # the service is running now


@dataclass(frozen=True)
class Unreadable:
    """A probe's answer that could not be read (it failed, or printed what it never prints): the status line
    says so and is never taken for "none" or 0."""
    why: str


@dataclass(frozen=True)
class Health:
    code: str           # the HTTP status, "000" when nothing answered
    curl: int           # curl's exit status with the certificate verified
    verified: bool      # the certificate was verified against the server's CA store
    socket: str = ""    # the release socket nginx says answered ("" when no release did)


# --- what to ask ---------------------------------------------------------------------------------------------

def health_command(host: str, path: str, https: bool) -> str:
    """GET `path` through nginx on the server itself, by the site's name, as a visitor would: over HTTPS with
    the certificate verified against the server's CA store. When the certificate does not verify, the request
    is made again without verifying, so the app's own answer is still known. Prints `VERIFIED CURL CODE
    SOCKET`, SOCKET being the release socket nginx says answered (nothing when no release did: the placeholder
    page, a config nginx was not reloaded with)."""
    ask = ["-o", "/dev/null", "-w", commands.SERVED]
    return (f"served=$({commands.through_nginx(host, path, https, *ask)}); rc=$?\n"
            f"if [ \"$rc\" -eq {CURL_UNTRUSTED} ]; then "
            f"served=$({commands.through_nginx(host, path, https, *ask, '--insecure')}); "
            "echo \"no $rc $served\"; else echo \"yes $rc $served\"; fi")


# What systemd knows of each timer and of the service it starts. A timer's LastTriggerUSec is not evidence of a
# run: with Persistent=true, systemd creates the timer's stamp file when the timer first starts and, after a
# reboot, reads LastTriggerUSec back from that file's mtime (LastTriggerUSecMonotonic stays 0), so a timer
# that never ran reports a "last trigger" and its service the default Result=success. The service's own
# InvocationID says whether it ran in this boot; a run before the boot is looked up in the journal (systemd's
# job-done line for the service, with its JOB_RESULT). `--timestamp=unix` (systemd 252 and 257 alike) turns the
# service's ExecMain* times into `@SECONDS`, but not the timer's LastTriggerUSec or NextElapseUSecRealtime,
# which date(1) converts on the server, in its own time zone.
TIMER_PROPERTIES = "Unit,ActiveState,LastTriggerUSec,LastTriggerUSecMonotonic,NextElapseUSecRealtime"
SERVICE_PROPERTIES = "InvocationID,ActiveState,Result,ExecMainStatus,ExecMainStartTimestamp,ExecMainExitTimestamp"


def timers_command(list_units: str) -> str:
    """For each timer `list_units` lists: `@timer UNIT`, its properties (with the two times as Unix seconds),
    `@service` and its service's, and, when the service has not run in this boot, `@journal` and the last
    job result the journal holds for it."""
    return (f"{list_units} | while read -r unit _; do\n"
            "  echo \"@timer $unit\"\n"
            f"  props=$(systemctl show -p {TIMER_PROPERTIES} \"$unit\")\n"
            "  printf '%s\\n' \"$props\"\n"
            "  for key in LastTriggerUSec NextElapseUSecRealtime; do\n"
            "    value=$(printf '%s\\n' \"$props\" | sed -n \"s/^$key=//p\")\n"
            "    echo \"$key.unix=${value:+$(date -d \"$value\" +%s 2>/dev/null)}\"\n"
            "  done\n"
            "  service=$(printf '%s\\n' \"$props\" | sed -n 's/^Unit=//p')\n"
            "  [ -n \"$service\" ] || continue\n"
            "  echo @service\n"
            f"  state=$(systemctl show --timestamp=unix -p {SERVICE_PROPERTIES} \"$service\")\n"
            "  printf '%s\\n' \"$state\"\n"
            "  if printf '%s\\n' \"$state\" | grep -qx 'InvocationID='; then\n"
            "    echo @journal\n"
            "    journalctl -q --no-pager -o export -n 1 _PID=1 \"UNIT=$service\" JOB_TYPE=start "
            "JOB_RESULT=done JOB_RESULT=failed </dev/null 2>/dev/null \\\n"
            "      | grep -a -E '^(__REALTIME_TIMESTAMP|JOB_RESULT)=' || true\n"
            "  fi\n"
            "done")


def certificate_command(cert: str) -> str:
    """When the certificate expires (Unix seconds), or "absent" when there is no certificate file; fails when
    there is one that cannot be read."""
    return (f"c={q(cert)}\n"
            "[ -e \"$c\" ] || { echo absent; exit 0; }\n"
            "end=$(openssl x509 -noout -enddate -in \"$c\") && date -d \"${end#notAfter=}\" +%s")


def status_probes(layout: Layout, db: Client, host: str, health_path: str, https: bool,
                  services: tuple[str, ...] = ()) -> list[Probe]:
    """Everything `fab status` shows, for one gather (with `state_probes` for the releases)."""
    app = layout.app
    timers = join("systemctl", "list-units", "--all", "--plain", "--no-legend", f"{app}-*.timer", "certbot.timer",
                  "apt-daily-upgrade.timer")
    return [
        Probe("now", "date +%s", lambda out, rc: int(out.strip())),
        Probe("units", join("systemctl", "list-units", "--all", "--plain", "--no-legend", f"{app}@*.service",
                            "nginx.service", "postgresql.service", "postgresql@*.service",
                            "unattended-upgrades.service"),
              lambda out, rc: parse_units(out)),
        Probe("timers", timers_command(timers), lambda out, rc: parse_timers(out)),
        Probe("health", health_command(host, health_path, https), lambda out, rc: parse_health(out)),
        Probe("certificate", certificate_command(layout.certificate_dir + "/cert.pem"), parse_certificate),
        Probe("disk", join("df", "-Pk", "/", layout.root), parse_disk),
        # The live release as unpacked (code, collected static files, bytecode): about what the next one needs.
        Probe("release_kib", f"du -sk -- \"$(readlink -f {q(layout.current)})\" 2>/dev/null",
              lambda out, rc: int(out.split()[0]) if rc == 0 and out.split() and out.split()[0].isdigit() else None),
        Probe("memory", "cat /proc/meminfo", lambda out, rc: parse_meminfo(out)),
        Probe("newest_backup", listing.listing_command(layout), parse_newest_backup),
        reach_probe(db),
        # apt's view from the package lists it already has (apt-daily refreshes them): no network, no lock.
        Probe("updates", "apt-get -s -q -o Debug::NoLocking=1 dist-upgrade 2>/dev/null | grep '^Inst ' "
                         "| awk '{n++} /[Ss]ecurity/ {s++} END {print n+0, s+0}'",
              lambda out, rc: tuple(int(n) for n in out.split()) if len(out.split()) == 2 else None),
        Probe("unattended", "apt-config dump APT::Periodic::Unattended-Upgrade",
              lambda out, rc: '"1"' in out),
        Probe("reboot", "if [ -e /run/reboot-required ]; then echo yes; cat /run/reboot-required.pkgs; fi",
              lambda out, rc: out.split()[1:] if out.startswith("yes") else None),
        *([redis_probe(layout)] if REDIS in services else []),
    ]


def redis_probe(layout: Layout) -> Probe:
    """redis-server's state and Redis as the app sees it (services.ping: the password read on the server)."""
    return Probe("redis", f"echo \"state=$(systemctl is-active {REDIS_UNIT} 2>/dev/null)\"\n{ping(layout)}",
                 parse_redis)


def media_probe(inventory: Inventory) -> Probe:
    """The media store asked for the bucket with the app's key, from the server (commands/media.py `check`)."""
    return Probe("media", media.check(inventory), parse_media)


def parse_media(out: str, rc: int) -> dict | Unreadable:
    found = parse_reports(out)
    if rc != 0 or "said" not in found:
        return Unreadable(f"could not ask the media store (exit {rc}): {out.strip()[-200:] or 'no output'}")
    return found


def media_check(found: dict | Unreadable, inventory: Inventory) -> Check:
    """The store answers the app's key for its bucket: uploads can be written and served."""
    where = f"bucket {inventory.media.bucket} at {inventory.media.endpoint}"
    if isinstance(found, Unreadable):
        return Check(FAIL, "media store", f"{found.why}; run `fab provision`")
    if found["status"] != 200:
        return Check(FAIL, "media store", f"{where} {found['said']}: uploads fail; fix it, then `fab provision`")
    return Check(OK, "media store", f"{where} {found['said']}")


def parse_redis(out: str, rc: int) -> dict | Unreadable:
    found = parse_reports(out)
    state = out.splitlines()[0].partition("=")[2] if out.startswith("state=") else ""
    if rc != 0 or not found:
        return Unreadable(f"could not ask Redis (exit {rc}): {out.strip()[-200:] or 'no output'}")
    return {**found, "state": state}


def processes_probe(layout: Layout, names: list[str]) -> Probe:
    """systemd's view of each process type's instance in the live release (the `current` link): blocks of
    Id=, ActiveState=, SubState=, NRestarts=, StateChangeTimestamp= (Unix time); nothing before a deploy."""
    shows = "; ".join(f"systemctl show --timestamp=unix -p Id -p ActiveState -p SubState -p NRestarts "
                      f"-p StateChangeTimestamp {q(layout.app + '-' + name + '@')}\"$gw_r\".service; echo"
                      for name in names)
    return Probe("processes", f"gw_r=$(readlink {q(layout.current)}) || exit 0; gw_r=${{gw_r##*/}}; {shows}",
                 parse_process_blocks)


def parse_process_blocks(out: str, rc: int) -> dict[str, dict[str, str]] | Unreadable:
    """{unit: {property: value}} from `systemctl show` blocks separated by blank lines."""
    if rc != 0:
        return Unreadable(f"systemctl show exited {rc}")
    found, block = {}, {}
    for line in [*out.splitlines(), ""]:
        if not line.strip():
            if "Id" in block:
                found[block["Id"]] = block
            block = {}
            continue
        key, _, value = line.partition("=")
        block[key] = value
    return found


# --- reading the answers -------------------------------------------------------------------------------------

def parse_units(out: str) -> dict[str, str]:
    """`systemctl list-units --plain` lines -> {unit: "ACTIVE/SUB"}."""
    units = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            units[fields[0]] = f"{fields[2]}/{fields[3]}"
    return units


def _unix(value: str) -> int | None:
    """Unix seconds, or None (never ran, not scheduled)."""
    return int(value) if value.strip().isdigit() else None


def _seconds(value: str | None) -> int | None:
    """A time systemd or date(1) printed as Unix seconds (`@1796440705` or `1796440705`), or None."""
    value = (value or "").strip().removeprefix("@")
    return int(value) if value.isdigit() and int(value) > 0 else None


def parse_timer_blocks(out: str) -> list[tuple[str, dict[str, dict[str, str]]]]:
    """`timers_command` output -> [(timer, {"timer": props, "service": props, "journal": fields})]."""
    blocks: list[tuple[str, dict[str, dict[str, str]]]] = []
    section = "timer"
    for line in out.splitlines():
        if line.startswith("@timer "):
            blocks.append((line.removeprefix("@timer ").strip(), {"timer": {}, "service": {}, "journal": {}}))
            section = "timer"
        elif line in ("@service", "@journal") and blocks:
            section = line[1:]
        elif blocks and "=" in line:
            key, _, value = line.partition("=")
            blocks[-1][1][section].setdefault(key, value)
    return blocks


def timer_from(unit: str, props: dict[str, dict[str, str]]) -> Timer:
    """What one timer's properties say, believing only evidence of a run: the service's InvocationID (it ran
    in this boot), else the journal's last job result for it (it ran before). Neither: it has not run, whatever
    LastTriggerUSec (a stamp file's mtime after a reboot) and the default Result=success say."""
    timer, service, journal = props["timer"], props["service"], props["journal"]
    following = _seconds(timer.get("NextElapseUSecRealtime.unix"))
    active = timer.get("ActiveState", "")
    if service.get("InvocationID"):
        running = service.get("ActiveState") in ("activating", "active", "reloading", "deactivating")
        status = service.get("ExecMainStatus", "")
        return Timer(unit, active, _seconds(service.get("ExecMainStartTimestamp"))
                     or (_seconds(timer.get("LastTriggerUSec.unix"))
                         if timer.get("LastTriggerUSecMonotonic", "0") != "0" else None),
                     following, "" if running else service.get("Result", ""),
                     int(status) if status.isdigit() and not running else None, running)
    job = journal.get("JOB_RESULT", "")
    microseconds = journal.get("__REALTIME_TIMESTAMP", "")
    if job and microseconds.isdigit():
        return Timer(unit, active, int(microseconds) // 1_000_000, following, "success" if job == "done" else job)
    return Timer(unit, active, None, following, "")


def parse_timers(out: str) -> list[Timer]:
    return [timer_from(unit, props) for unit, props in parse_timer_blocks(out)]


def parse_health(out: str) -> Health | None:
    fields = out.split()
    if len(fields) not in (3, 4) or not fields[1].isdigit():
        return None
    return Health(fields[2], int(fields[1]), fields[0] == "yes", fields[3] if len(fields) == 4 else "")


@dataclass(frozen=True)
class Disk:
    mount: str
    used: int           # percent used, as df rounds it
    free_kib: int       # available to an unprivileged writer (df's Available column)


def parse_disk(out: str, rc: int) -> list[Disk] | Unreadable:
    """`df -Pk` -> each file system once: its mount point, percent used and free KiB. Unreadable when df
    failed (for any of the paths asked) or a line is not df's: a partial answer would name the wrong mount."""
    if rc != 0:
        return Unreadable(f"df exited with status {rc}")
    seen: dict[str, Disk] = {}
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    for fields in rows:
        if not (len(fields) >= 6 and fields[4].rstrip("%").isdigit() and fields[3].isdigit()):
            return Unreadable(f"df printed a line it does not print: {' '.join(fields)[:80]!r}")
        seen.setdefault(fields[5], Disk(fields[5], int(fields[4].rstrip("%")), int(fields[3])))
    return list(seen.values()) if seen else Unreadable("df printed no file system")


def parse_meminfo(out: str) -> dict[str, int]:
    """/proc/meminfo -> {name: KiB}."""
    values = {}
    for line in out.splitlines():
        name, _, rest = line.partition(":")
        number = rest.split()
        if number and number[0].isdigit():
            values[name.strip()] = int(number[0])
    return values


def parse_certificate(out: str, rc: int) -> int | None | Unreadable:
    """When the certificate expires (Unix seconds); None when there is no certificate file."""
    if rc == 0 and out.strip() == "absent":
        return None
    if rc == 0 and out.strip().isdigit():
        return int(out.strip())
    return Unreadable(f"openssl or date exited with status {rc}" if rc else "no date was printed")


def parse_newest_backup(out: str, rc: int) -> listing.BackupFile | None | Unreadable:
    """The newest dump; None when the directory was listed and has none."""
    files = listing.parse_listing(out, rc)
    if files is None:
        return Unreadable(f"listing it exited with status {rc}")
    return listing.newest_dump(files)


# --- what the answers mean -----------------------------------------------------------------------------------

def _created(release_id: str, created: str) -> int | None:
    """When a release was made: its metadata's time, else the time in its id."""
    return timestamps.parse(created) or timestamps.parse(release_id)


def release_check(state: ServerState, now: int) -> Check:
    def named(release_id: str) -> str:
        release = state.releases.get(release_id)
        made = _created(release_id, release.created if release else "")
        commit = (release.commit[:7] if release and release.commit else "?")
        return f"{release_id} (commit {commit}" + (f", {age(now - made)} old)" if made else ")")

    if state.live is None:
        return Check(WARN, "release", "none is live: the placeholder page shows. Deploy with `fab deploy`")
    previous = state.previous_good()
    return Check(OK, "release", f"live {named(state.live)}; previous "
                 + (named(previous) if previous else "none (a rollback has nothing to go back to)"))


def gunicorn_check(app: str, live: str | None, units: dict[str, str], target: str | None = None,
                   standby: bool = True) -> Check:
    """The live instance's state, and what else runs: only `target` (the release `fab rollback` would go to)
    is called warm, and only when it is running; any other instance is named as not a rollback target. Without
    a `standby` (app.standby_minutes 0) a target that is not running is what the inventory asks for."""
    instances = {u: s for u, s in units.items() if u.startswith(f"{app}@") and u.endswith(".service")}
    if live is None:
        return Check(OK, "gunicorn", "nothing to run until the first deploy")
    unit = f"{app}@{live}.service"
    state = instances.get(unit, "inactive/dead")
    failed = sorted(u for u, s in instances.items() if u != unit and s.startswith("failed"))
    if not state.startswith("active"):
        return Check(FAIL, "gunicorn", f"{unit} (the live release) is {state}: the site cannot answer. "
                     f"See why with `fab logs`; `sudo systemctl start {unit}` starts it again")
    others = [u for u, s in instances.items() if u != unit and s.startswith("active")]
    if failed:
        return Check(WARN, "gunicorn", f"{unit} active; failed: {', '.join(failed)} (see `fab logs`)")
    warm = f"{app}@{target}.service" if target else None
    strays = sorted(u for u in others if u != warm)
    text = f"{unit} active"
    if warm in others:
        text += f"; also running: {warm} (the rollback target, warm for an instant rollback)"
    elif target and not standby:
        text += (f"; no standby is kept (app.standby_minutes: 0): the rollback target {target} is not running, "
                 "and `fab rollback` starts it cold first")
    elif target:
        text += f"; the rollback target {target} is not running (a rollback starts it first)"
    if strays:
        text += (f"; also running, not the rollback target: {', '.join(strays)} (the next deploy or rollback "
                 "stops them)")
    return Check(OK, "gunicorn", text)


def process_checks(layout: Layout, names: list[str], live: str | None,
                   found: dict[str, dict[str, str]] | Unreadable | None, now: int) -> list[Check]:
    """One line per process type of the live release: FAIL when it is not running."""
    if not names or live is None:
        return []
    if isinstance(found, Unreadable) or found is None:
        why = found.why if isinstance(found, Unreadable) else "no answer"
        return [Check(FAIL, "processes", f"could not read their state ({why}): "
                                         f"`sudo systemctl status '{layout.app}-*@{live}.service'` on the server")]
    checks_ = []
    for name in names:
        unit = layout.process_unit(name, live)
        props = found.get(unit, {})
        state, sub = props.get("ActiveState", "unknown"), props.get("SubState", "")
        restarts = props.get("NRestarts", "?")
        since = props.get("StateChangeTimestamp", "").lstrip("@")
        when = f" for {age(now - int(since))}" if since.isdigit() and int(since) else ""
        restarted = f", restarted by systemd {restarts} time(s)" if restarts not in ("0", "?") else ""
        if state == "active":
            checks_.append(Check(OK, name, f"{unit} running{when}{restarted}"))
        else:
            checks_.append(Check(FAIL, name, f"{unit} (the live release's) is {state}/{sub}{when}{restarted}: "
                                             f"see why with `fab logs --process {name}`; `sudo systemctl start "
                                             f"{unit}` starts it again"))
    return checks_


def service_check(name: str, units: dict[str, str], wanted: list[str], why: str) -> Check:
    states = {u: units.get(u, "not-found") for u in wanted}
    down = [f"{u} is {s}" for u, s in states.items() if not s.startswith("active")]
    if down:
        return Check(FAIL, name, f"{'; '.join(down)}: {why}")
    return Check(OK, name, ", ".join(f"{u} {s}" for u, s in states.items()))


def database_check(reached: dict, inventory: Inventory) -> Check:
    """The app's database as its client reaches it, with the app's own credentials: who it is connected as, or
    libpq's error and what usually causes it."""
    if reached is None:
        return Check(WARN, "database", "could not be read: the probe of the app's database gave no answer")
    if reached["ok"]:
        return Check(OK, "database", f"connected as {reached['said']}")
    if db_address(inventory) is not None:
        return Check(FAIL, "database", f"{reached['said']}: the app cannot use its database on the db host "
                                       f"{db_address(inventory)}; `fab status` shows PostgreSQL there, and "
                                       "`fab provision` gives the app hosts its CA and password anew")
    if inventory.database is None:
        return Check(FAIL, "database", f"{reached['said']}: the app cannot use its database; `sudo systemctl "
                                       "status postgresql` on the server")
    return Check(FAIL, "database", f"{reached['said']}: the app cannot use its database at "
                                   f"{inventory.database.url.split('?')[0]}; a wrong password is given anew with "
                                   f"`{inventory.database.password_env}=... fab provision`")


def postgres_probe(app: str) -> Probe:
    """A db host's PostgreSQL, read back: the addresses it listens on (the kernel's sockets), whether TLS is on,
    and the connections to the app's database (how many over TLS)."""
    lit = app.replace("'", "''")
    sql = ("select current_setting('ssl') || ' ' || count(*) || ' ' || count(*) filter (where s.ssl) "
           f"from pg_stat_activity a left join pg_stat_ssl s using (pid) where a.datname = '{lit}' "
           "and a.backend_type = 'client backend'")
    return Probe("postgres_server", f"ss -ltnH {q(f'sport = :{defaults.POSTGRES_PORT}')} | awk '{{print $4}}'; "
                                    f"echo; cd / && runuser -u postgres -- psql -X -q -t -A -c {q(sql)}",
                 parse_postgres)


def parse_postgres(out: str, rc: int) -> dict | Unreadable:
    sockets, _, pg = out.strip().rpartition("\n\n")
    fields = pg.split()
    if rc != 0 or len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
        return Unreadable(f"PostgreSQL did not answer (exit {rc})")
    return {"listening": sockets.split(), "ssl": fields[0] == "on", "connections": int(fields[1]),
            "tls": int(fields[2])}


def postgres_check(found: dict | Unreadable, app: str, address: str) -> Check:
    """The db host's PostgreSQL as read back: where it listens, TLS, the app's connections."""
    if isinstance(found, Unreadable):
        return Check(FAIL, "postgresql", f"{found.why}: the app hosts cannot reach the database; `sudo systemctl "
                                         "status postgresql` here")
    where = ", ".join(found["listening"]) or "no address"
    text = (f"listening on {where} (and its socket), TLS {'on' if found['ssl'] else 'OFF'}, "
            f"{found['connections']} connection(s) to {app}, {found['tls']} over TLS")
    wanted = f"{address}:{defaults.POSTGRES_PORT}" if ":" not in address else f"[{address}]:{defaults.POSTGRES_PORT}"
    if found["listening"] != [wanted] or not found["ssl"]:
        return Check(FAIL, "postgresql", f"{text}; wanted {wanted} alone, with TLS: run `fab provision`")
    return Check(OK, "postgresql", text)


def health_check(health: Health | None, host: str, path: str, https: bool, private_ca: bool,
                 maintenance: bool, live: str | None = None, layout: Layout | None = None) -> Check:
    """The site asked through nginx by its name: a 2xx counts only when the live release answered it (nginx
    names the socket it reached), not the placeholder page nor a release that is no longer live."""
    scheme = "https" if https else "http"
    what = f"GET {scheme}://{host}{path} through nginx on the server"
    if health is None:
        return Check(FAIL, "health", f"{what}: no answer could be read")
    trust = ""
    if https:
        if health.verified:
            trust = "; certificate verified against the server's CA store"
        elif private_ca:
            trust = ("; certificate NOT verified: it comes from the private CA of acme.directory, which the "
                     "server's CA store does not hold")
        else:
            return Check(FAIL, "health", f"{what} -> {health.code}, but the certificate does not verify against "
                         "the server's CA store (curl exit 60): visitors' browsers will refuse it too. "
                         "`fab provision` renews it")
    if health.code.startswith("2") and live and layout and health.socket != layout.socket(live):
        served = layout.release_of_socket(health.socket) or health.socket
        if not health.socket:
            return Check(FAIL, "health", f"{what} -> {health.code}, but from no release: nginx serves the "
                         f"placeholder page (or a config that does not proxy to the live link), not {live}: run "
                         "`fab deploy` (it repairs nginx), or `sudo nginx -t && sudo systemctl reload nginx` on "
                         "the server")
        return Check(FAIL, "health", f"{what} -> {health.code}, but from {served}, not the live release {live}: "
                     "run `fab deploy` (it repairs nginx)")
    if health.code.startswith("2"):
        served = f", from {live}" if live and layout else ""
        return Check(OK, "health", f"{what} -> {health.code}{served}{trust}")
    if maintenance and health.code == "503":
        return Check(WARN, "health", f"{what} -> 503: maintenance mode is on")
    if health.code == "000":
        return Check(FAIL, "health", f"{what}: no answer (curl exit {health.curl}); is nginx running?")
    return Check(FAIL, "health", f"{what} -> {health.code}, not 2xx: see `fab logs`")


def certificate_check(expires: int | None | Unreadable, now: int, https: bool, warn_days: int,
                      path: str = "the certificate") -> Check | None:
    if not https:
        return None
    if isinstance(expires, Unreadable):
        return Check(FAIL, "certificate", f"could not read {path} ({expires.why}), so when it expires is unknown: "
                     f"look with `sudo openssl x509 -noout -enddate -in {path}` on the server")
    if expires is None:
        return Check(FAIL, "certificate", "none found on the server: run `fab provision` to get one")
    days = (expires - now) // 86400
    if expires <= now:
        return Check(FAIL, "certificate", f"expired {age(now - expires)} ago: check `systemctl status certbot` "
                     "on the server, then run `fab provision`")
    if days < warn_days:
        return Check(WARN, "certificate", f"expires in {days} days, and certbot renews 30 days ahead: renewal "
                     "is failing, see `journalctl -u certbot` on the server")
    return Check(OK, "certificate", f"{days} days left")


def release_need_kib(release_kib: int | None) -> int:
    """Room the next deploy needs: what the live release takes unpacked (a deploy's own estimate is its archive
    times deploy.UNPACK_FACTOR), plus the spare a deploy keeps (release_commands.LOW_SPACE_KIB)."""
    return (release_kib or 0) + LOW_SPACE_KIB


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib < 10 * 1048576 else f"{kib / 1048576:.1f} GiB"


def disk_check(disks: list[Disk] | Unreadable, warn_percent: int, need_kib: int = LOW_SPACE_KIB, app_mount: str = "",
               backups: str = "backups/", asked: str = "df -Pk") -> Check:
    """FAIL when a file system is full, or the app's has less free than the next release needs; WARN over
    `warn_percent`, and when the free space could not be read. `app_mount` is the mount point the app's
    directory is on (the last df line)."""
    if isinstance(disks, Unreadable) or not disks:
        why = disks.why if isinstance(disks, Unreadable) else "df gave no answer"
        return Check(WARN, "disk", f"could not read the free space ({why}), so whether the next deploy, backup or "
                     f"PostgreSQL has room is unknown: look with `{asked}` on the server")
    app_mount = app_mount or disks[-1].mount
    text = ", ".join(f"{d.mount} {d.used} % used, {_mib(d.free_kib)} free" for d in disks)
    fix = (f"free some space: old database dumps in {backups}, `sudo apt-get clean`, "
           "`sudo journalctl --vacuum-size=100M`")
    full = [d.mount for d in disks if d.used >= 100 or d.free_kib == 0]
    if full:
        return Check(FAIL, "disk", f"{text}: {', '.join(full)} is full, so deploys, backups, PostgreSQL and the "
                     f"journal cannot write; {fix}")
    short = [d for d in disks if d.mount == app_mount and d.free_kib < need_kib]
    if short:
        return Check(FAIL, "disk", f"{text}: a deploy needs about {_mib(need_kib)} free on {app_mount} "
                     f"(a release unpacked, plus a margin) and would be refused; {fix}")
    if any(d.used > warn_percent for d in disks):
        return Check(WARN, "disk", f"{text}: over {warn_percent} %; deploys, backups and PostgreSQL need room")
    return Check(OK, "disk", text)


def memory_check(meminfo: dict[str, int], warn_percent: int) -> Check:
    total, available = meminfo.get("MemTotal"), meminfo.get("MemAvailable")
    if not total or available is None:
        return Check(WARN, "memory", "/proc/meminfo gave no answer")
    used = round(100 * (total - available) / total)
    swap = meminfo.get("SwapTotal", 0) - meminfo.get("SwapFree", 0)
    text = (f"{used} % used of {total / 1048576:.1f} GiB" + (f", swap {swap / 1024:.0f} MiB in use"
                                                              if meminfo.get("SwapTotal") else ""))
    if used > warn_percent:
        return Check(WARN, "memory", f"{text}: over {warn_percent} %; the kernel may kill a worker or PostgreSQL")
    return Check(OK, "memory", text)


def redis_check(found: dict | Unreadable) -> Check:
    """Running, answering PING with the app's password, refusing a client without it, loopback only, and the
    app's shared/env holding the URLs that work."""
    fix = f"run `fab provision`; see why with `sudo journalctl -u {REDIS_UNIT} -n 50`"
    if isinstance(found, Unreadable):
        return Check(FAIL, "redis", f"{found.why}; {fix}")
    if found["state"] != "active":
        return Check(FAIL, "redis", f"{REDIS_UNIT} is {found['state'] or 'not installed'}: the app cannot reach "
                                    f"its queue or cache; {fix}")
    if found["secret"] != "ok":
        return Check(FAIL, "redis", f"the password file {REDIS_SECRET} {found['secret']}")
    if found["answer"] != "PONG":
        return Check(FAIL, "redis", f"did not answer PING with the app's password: {found['answer']}; {fix}")
    if not found["anonymous"].startswith("NOAUTH"):
        return Check(FAIL, "redis", f"answers a client without the password ({found['anonymous']}); {fix}")
    beyond = sorted(set(found["listening"] or ()) - {"127.0.0.1", "::1"})
    if beyond:
        return Check(FAIL, "redis", f"listens beyond the loopback address: {', '.join(beyond)}; {fix}")
    text = f"{REDIS_UNIT} active, answers PING with the app's password, {found['used_memory']} used"
    wrong = sorted(name for name, state in (found["env"] or {}).items() if state != "ok")
    if wrong:
        return Check(WARN, "redis", f"{text}; but shared/env has {', '.join(wrong)} "
                                    f"{'/'.join(sorted({found['env'][n] for n in wrong}))}: run `fab provision`")
    return Check(OK, "redis", text + ("" if found["env"] else "; shared/env comes with the first deploy"))


def backup_check(newest: listing.BackupFile | None | Unreadable, scheduled: bool, max_age_days: int,
                 backups: str = "backups/") -> Check:
    if isinstance(newest, Unreadable):
        return Check(WARN, "backups", f"could not read {backups} ({newest.why}), so whether a recent backup "
                     f"exists is unknown: look with `sudo ls -l {backups}` on the server")
    if newest is None:
        if scheduled:
            return Check(WARN, "backups", "none yet, although backups are scheduled: see `fab logs` and "
                         "the backup timer below")
        return Check(OK, "backups", "none yet (none are scheduled; `fab backup` takes one)")
    text = f"latest {newest.name}, {newest.size / 1048576:.1f} MiB, {age(newest.age)} old"
    if scheduled and newest.age > max_age_days * 86400:
        return Check(WARN, "backups", f"{text}: older than {max_age_days} days although backups are scheduled")
    return Check(OK, "backups", text + ("" if scheduled else " (none are scheduled)"))


def updates_check(updates: tuple[int, int] | None, unattended: bool, units: dict[str, str],
                  timers: list[Timer]) -> Check:
    apt_timer = next((t for t in timers if t.unit == "apt-daily-upgrade.timer"), None)
    on = unattended and apt_timer is not None and apt_timer.active == "active"
    if updates is None:
        return Check(WARN, "updates", "apt could not say which updates are pending")
    pending, security = updates
    text = f"{security} security update(s) pending, {pending} in all"
    if not on:
        return Check(WARN, "updates", f"{text}; unattended-upgrades is not enabled, so nothing installs them: "
                     "run `fab provision`")
    if not units.get("unattended-upgrades.service", "").startswith("active"):
        return Check(WARN, "updates", f"{text}; unattended-upgrades.service is not running: run `fab provision`")
    return Check(OK, "updates", f"{text}; unattended-upgrades installs security updates daily")


def reboot_check(packages: list[str] | None) -> Check:
    if packages is None:
        return Check(OK, "reboot", "not required")
    return Check(WARN, "reboot", "required, to load updated " + (", ".join(sorted(set(packages))) or "packages")
                 + ": reboot the server when traffic is low (the app starts by itself)")


def schema_check(state: ServerState) -> Check | None:
    """The database's applied migrations against the live release's code, as `showmigrations` compares them
    (squashed migrations and the names they replace count as one): a mismatch fails, with the fix."""
    live = state.releases.get(state.live or "")
    if live is None:
        return None
    if state.applied is None:
        return Check(FAIL, "schema", "could not read which migrations the database has applied: the database "
                     "line says why")
    ahead, behind = state.schema_ahead(), state.schema_behind()
    problems = []
    if ahead:
        problems.append(f"the database has {len(ahead)} migration(s) the live release {live.id} does not know "
                        f"({_some(ahead)}): its code runs on a schema it was not written for. Deploy the code "
                        f"that has them, or reverse them with `fab rollback --to {live.id} --migrate-back`")
    if behind:
        problems.append(f"the database lacks {len(behind)} migration(s) the live release {live.id} has "
                        f"({_some(behind)}): its code expects tables or columns that are not there (a restore "
                        "of an older backup?). Apply them with `fab manage -- migrate` (after `fab backup`), or "
                        "restore a backup that has them")
    if problems:
        return Check(FAIL, "schema", "; ".join(problems))
    return Check(OK, "schema", f"the {len(state.applied)} applied migrations match the live release's code")


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")


def maintenance_check(on: bool) -> Check:
    if on:
        return Check(WARN, "maintenance", "ON: visitors get the maintenance page (503); `fab maintenance off`")
    return Check(OK, "maintenance", "off")


def timer_check(timer: Timer, now: int) -> Check:
    service = f"{timer.unit.removesuffix('.timer')}.service"
    if timer.running:
        last = "running now" + (f" (since {age(now - timer.last)})" if timer.last else "")
    elif timer.last is None or not timer.result:
        last = "has not run yet"
    else:
        exit_status = f", exit status {timer.status}" if timer.status else ""
        last = f"last ran {age(max(now - timer.last, 0))} ago ({timer.result}{exit_status})"
    upcoming = f"next in {age(timer.next - now)}" if timer.next else "not scheduled"
    text = f"{last}, {upcoming}"
    if timer.active != "active":
        return Check(WARN, timer.unit, f"{timer.active}: it will not run; `fab provision` enables it")
    if timer.result not in ("success", "") and not timer.running:
        return Check(WARN, timer.unit, f"{text}: its last run failed; see `journalctl -u {service}` on the server")
    return Check(OK, timer.unit, text)


def db_checks(inventory: Inventory, host: Host, facts: dict) -> list[Check]:
    """A db host's lines: PostgreSQL, its backups and the machine (no site, no release here)."""
    app, units, timers = inventory.app.name, facts["units"], facts["timers"]
    layout = Layout(app)
    postgres = ["postgresql.service"] + sorted(u for u in units if u.startswith("postgresql@"))
    backup = [t for t in timers if t.unit == f"{app}-backup.timer"]
    return [service_check("postgresql", units, postgres, "the app hosts cannot reach the database; `sudo systemctl "
                          "start postgresql`"),
            postgres_check(facts["postgres_server"], app, host.peer_address),
            disk_check(facts["disk"], defaults.STATUS_DISK_PERCENT, backups=f"{layout.backups}/",
                       asked=f"df -h / {layout.root}"),
            memory_check(facts["memory"], defaults.STATUS_MEMORY_PERCENT),
            backup_check(facts["newest_backup"], bool(backup), defaults.STATUS_BACKUP_DAYS, f"{layout.backups}/"),
            updates_check(facts["updates"], facts["unattended"], units, timers),
            reboot_check(facts["reboot"]),
            *(timer_check(t, facts["now"]) for t in backup)]


# What `fab status` reads of a db host that runs no app (of status_probes, and postgres_probe).
DB_HOST_FACTS = ("now", "units", "timers", "disk", "memory", "newest_backup", "updates", "unattended", "reboot",
                 "postgres_server")


def checks(inventory: Inventory, host: str, state: ServerState, facts: dict, https: bool | None = None) -> list[Check]:
    """Every line of one server's status, in the order shown. `https`: whether this server's nginx holds the
    certificate (default: whether the site has one; a web host behind a load balancer does not)."""
    app, now = inventory.app, facts["now"]
    layout = Layout(app.name)
    units, timers = facts["units"], facts["timers"]
    https = inventory.tls if https is None else https
    private_ca = inventory.acme.directory != defaults.ACME_DIRECTORY
    postgres = ["postgresql.service"] + sorted(u for u in units if u.startswith("postgresql@"))
    found = [
        release_check(state, now),
        gunicorn_check(app.name, state.live, units, state.previous_good(), app.standby_minutes > 0),
        *process_checks(layout, [p.name for p in app.processes], state.live, facts.get("processes"), now),
        service_check("nginx", units, ["nginx.service"], "no site answers; `sudo systemctl start nginx`"),
        None if inventory.database else service_check("postgresql", units, postgres, "the app cannot reach its "
                                                      "database; `sudo systemctl start postgresql`"),
        database_check(facts["database:reach"], inventory),
        postgres_check(facts["postgres_server"], app.name, inventory.db_host.peer_address)
        if "postgres_server" in facts else None,
        redis_check(facts["redis"]) if REDIS in inventory.services else None,
        media_check(facts["media"], inventory) if inventory.media else None,
        health_check(facts["health"], host, app.health_check, https, private_ca, facts["maintenance"], state.live,
                     Layout(app.name)),
        schema_check(state),
        certificate_check(facts["certificate"], now, https, defaults.STATUS_CERT_DAYS,
                          f"{layout.certificate_dir}/cert.pem"),
        disk_check(facts["disk"], defaults.STATUS_DISK_PERCENT, release_need_kib(facts.get("release_kib")),
                   backups=f"{layout.backups}/", asked=f"df -h / {layout.root}"),
        memory_check(facts["memory"], defaults.STATUS_MEMORY_PERCENT),
        backup_check(facts["newest_backup"], any(t.unit == f"{app.name}-backup.timer" for t in timers),
                     defaults.STATUS_BACKUP_DAYS, f"{layout.backups}/"),
        updates_check(facts["updates"], facts["unattended"], units, timers),
        reboot_check(facts["reboot"]),
        maintenance_check(facts["maintenance"]),
    ]
    # apt's timer shows in the updates line; a standby timer is a deploy's own (it stops the previous release).
    shown = [t for t in timers if t.unit != "apt-daily-upgrade.timer" and (https or t.unit != "certbot.timer")
             and not t.unit.startswith(f"{app.name}-standby-")]
    if https and not any(t.unit == "certbot.timer" for t in timers):
        found.append(Check(FAIL, "certbot.timer", "missing: the certificate will not renew; run `fab provision`"))
    found += [timer_check(t, now) for t in sorted(shown, key=lambda t: t.unit)]
    return [c for c in found if c is not None]


# --- the load balancer ----------------------------------------------------------------------------------------

# What `fab status` reads on the load balancer: the probes of a web host's status it shares, then its own.
LB_PROBES = ("now", "units", "timers", "health", "certificate", "disk", "memory", "updates", "unattended", "reboot")


@dataclass(frozen=True)
class Member:
    """A web host in the load balancer's upstream, as its nginx site lists it, asked from the load balancer."""
    peer: str           # ADDRESS:80, as the upstream names it
    code: str           # the HTTP status, "000" when nothing answered
    curl: int           # curl's exit status
    socket: str = ""    # the release socket that web host's nginx says answered


def upstream_command(site_file: str, host: str, path: str, https: bool) -> str:
    """Each web host the load balancer's site (on the server, as nginx reads it) passes to, asked from the load
    balancer for `path` by the site's name, as the load balancer asks it: `PEER CURL CODE SOCKET` lines. It says
    it is 127.0.0.1 (X-Forwarded-For), as the load balancer does for a request made on it, so the web host names
    the release that answered, as it does for gangway's checks on itself."""
    ask = join("curl", "-s", "-g", "--noproxy", "*", "--max-time", "5", "-o", "/dev/null", "-w", commands.SERVED,
               "-H", f"Host: {host}", "-H", "X-Forwarded-For: 127.0.0.1",
               "-H", f"X-Forwarded-Proto: {'https' if https else 'http'}")
    return (f"sed -n 's/^[[:space:]]*server \\([^ ;]*\\) max_fails=.*/\\1/p' {q(site_file)} | "
            "while read -r peer; do\n"
            f"  served=$({ask} \"http://$peer\"{q(path)}); rc=$?\n"
            "  echo \"$peer $rc $served\"\n"
            "done")


def parse_upstream(out: str, rc: int) -> list[Member] | Unreadable:
    if rc != 0:
        return Unreadable(f"the site file could not be read (exit {rc})")
    members = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) not in (3, 4) or not fields[1].isdigit():
            return Unreadable(f"an answer that is not curl's: {line[:200]!r}")
        members.append(Member(fields[0], fields[2], int(fields[1]), fields[3] if len(fields) == 4 else ""))
    return members


def upstream_checks(members: list[Member] | Unreadable, inventory: Inventory, path: str) -> list[Check]:
    """One line per web host the load balancer passes to, read back from its site on the server: whether it
    answers `path`, and from which release; a web host of the inventory missing there is a FAIL too."""
    from ..provisioning.nginx import port_80
    if isinstance(members, Unreadable):
        return [Check(FAIL, "upstream", f"which web hosts the load balancer passes to is unknown: {members.why}; "
                      "run `fab provision`")]
    layout = Layout(inventory.app.name)
    found = [Check(OK, "upstream", f"passes to {len(members)} web host(s): {', '.join(m.peer for m in members)} "
                   "(read back from its site)")]
    for member in members:
        what = f"GET {path} at {member.peer}"
        if member.code.startswith("2"):
            release = layout.release_of_socket(member.socket) if member.socket else None
            found.append(Check(OK, f"web {member.peer}", f"{what} -> {member.code}"
                               + (f", from {release}" if release else "")))
        else:
            answer = f"-> {member.code}" if member.code != "000" else f"no answer (curl exit {member.curl})"
            found.append(Check(FAIL, f"web {member.peer}", f"{what} {answer}: the load balancer leaves it out, and "
                               f"tries it again every {defaults.LB_FAIL_TIMEOUT_S} s; `fab status` on that host "
                               "says why"))
    listed = {m.peer for m in members}
    missing = [port_80(h.peer_address) for h in inventory.with_role("web") if port_80(h.peer_address) not in listed]
    if missing:
        found.append(Check(FAIL, "upstream", f"{', '.join(missing)} of the inventory's web hosts not in the load "
                           "balancer's site, so it gets no traffic: run `fab provision`"))
    return found


def lb_checks(inventory: Inventory, host: str, facts: dict) -> list[Check]:
    """The load balancer's status: nginx, the site through it, each web host behind it, the certificate, the
    maintenance flag, and the server's own health."""
    now, units, timers = facts["now"], facts["units"], facts["timers"]
    https, layout = inventory.tls, Layout(inventory.app.name)
    private_ca = inventory.acme.directory != defaults.ACME_DIRECTORY
    found = [
        service_check("nginx", units, ["nginx.service"], "no site answers; `sudo systemctl start nginx`"),
        health_check(facts["health"], host, inventory.app.health_check, https, private_ca, facts["maintenance"]),
        *upstream_checks(facts["upstream"], inventory, inventory.app.health_check),
        certificate_check(facts["certificate"], now, https, defaults.STATUS_CERT_DAYS,
                          f"{layout.certificate_dir}/cert.pem"),
        disk_check(facts["disk"], defaults.STATUS_DISK_PERCENT, asked=f"df -h / {layout.root}"),
        memory_check(facts["memory"], defaults.STATUS_MEMORY_PERCENT),
        updates_check(facts["updates"], facts["unattended"], units, timers),
        reboot_check(facts["reboot"]),
        maintenance_check(facts["maintenance"]),
    ]
    certbot = [t for t in timers if t.unit == "certbot.timer"]
    if https and not certbot:
        found.append(Check(FAIL, "certbot.timer", "missing: the certificate will not renew; run `fab provision`"))
    found += [timer_check(t, now) for t in (certbot if https else [])]
    return [c for c in found if c is not None]


def lb_status_on(session: Session) -> int:
    inventory, layout, reporter = session.inventory, session.layout, session.reporter
    name, https = session.health_host(), inventory.tls
    probes = [p for p in status_probes(layout, session.database, name, inventory.app.health_check, https)
              if p.key in LB_PROBES]
    facts = session.remote.gather([
        *probes, commands.maintenance_probe(layout),
        Probe("upstream", upstream_command(layout.nginx_site, name, inventory.app.health_check, https),
              parse_upstream)])
    reporter.line(f"{session.host.address}: the load balancer of {session.app}" + (f" at {name}" if https else ""))
    return _show(session, lb_checks(inventory, name, facts))


def exit_code(found: list[Check]) -> int:
    return max((EXIT_CODES[c.level] for c in found), default=0)


# --- the task ------------------------------------------------------------------------------------------------



def status_on(session: Session) -> int:
    if session.host.has("lb"):
        return lb_status_on(session)
    inventory, layout, reporter = session.inventory, session.layout, session.reporter
    runs_app = session.host.has("web") or session.host.has("worker")
    name = session.health_host()
    https = inventory.terminates_tls(session.host)  # behind a load balancer, it holds the certificate
    probes = status_probes(layout, session.database, name, inventory.app.health_check, https, inventory.services)
    db_host = session.database.db_host
    if db_host and not runs_app:
        facts = session.remote.gather([p for p in probes if p.key in DB_HOST_FACTS] + [postgres_probe(session.app)])
        reporter.line(f"{session.host.address}: the database of {session.app} (db host)")
        return _show(session, db_checks(inventory, session.host, facts))
    facts = session.remote.gather(server_probes(layout, session.database) + probes
                                  + ([processes_probe(layout, [p.name for p in inventory.app.processes])]
                                     if inventory.app.processes else [])
                                  + ([postgres_probe(session.app)] if db_host else [])
                                  + ([media_probe(inventory)] if inventory.media else []))
    reporter.line(f"{session.host.address}: {session.app}" + (f" at {name}" if inventory.tls else ""))
    if not facts["provisioned"]:
        reporter.step(FAIL, "provision", f"the server is not provisioned for {session.app} by this version of "
                      "gangway: run `fab provision`")
        return EXIT_CODES[FAIL]
    return _show(session, checks(inventory, name, server_state(facts), facts, https))


def _show(session: Session, found: list[Check]) -> int:
    """The lines, and the one that sums them up; the exit code they mean."""
    reporter = session.reporter
    for check in found:
        reporter.step(check.level, check.name, check.detail)
    attention = [c.name for c in found if c.level != OK]
    reporter.line(f"{session.host.address}: " + (f"needs attention: {', '.join(attention)}" if attention
                                                 else "all well"))
    return exit_code(found)
