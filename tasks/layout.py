"""Where things live on the server, and what they are called: the one place that knows.

    /srv/APP/                 root, 755
      releases/RELEASE/       one directory per deploy; written by the build user while it is built, then
                              sealed (owned by root, read-only to everyone else)
        .gangway/release.json what the release is: commit, status, migrations
        .venv -> ../../venvs/H  its Python environment, shared by releases with the same requirements
        static/               its collected static files (STATIC_ROOT)
      venvs/HASH/             Python environments, keyed by a hash of the requirements (sealed like releases)
      failed/RELEASE/         releases that failed, kept aside for inspection
      shared/                 survives releases: env file, the app's own variables (config.env), media
        database.pgpass       with `database.url`: the database password (a libpq passfile), the app user's alone
        media/                the only place the app user may write
      static/                 what nginx serves at /static/: every kept release's files, so a page rendered
                              by the previous release still gets its hashed CSS and JS after a switch
      backups/                database dumps (root's alone): before migrations, daily, by hand; media archives
      state/                  the deploy lock, the audit log, and the maintenance flag (nginx answers 503
                              while it exists: its group is www-data, which may look it up but not list it)
      current -> releases/X   the live release
      live.sock -> /run/APP/X/gunicorn.sock
                              the socket nginx proxies to: re-pointing it switches traffic with no reload
    /etc/gangway/APP/         rendered config: gunicorn.conf.py, nginx backend include; with `database.url`,
                              database-ca.pem (the CA its TLS certificate is checked against) and
                              backup-command.json (how the scheduled backup runs pg_dump); on the app
                              hosts of several servers, database-ca.pem is the db host's CA; with `media`,
                              media-credentials.json (the store's access key and secret, root's alone)
    /etc/gangway/APP/         on a db host of several servers (README, "Several servers"): database-ca.pem and
                              database-ca.key (the CA gangway made there; the key root's alone, never copied),
                              database-server.pem/.key (PostgreSQL's certificate, the key postgres's alone),
                              database-password (the app role's, root's alone), pg_hba.conf (PostgreSQL's
                              hba_file: who may connect)
    /run/APP/RELEASE/         one Gunicorn socket per running release
    /var/lib/APP-NAME/        a process type's state (Celery beat's schedule file, say): kept across releases
    /var/cache/gangway/APP/uv/
                              uv's cache (downloads, wheels built once), the build user's; survives releases
    /opt/gangway/uv/          uv, which builds the releases' Python environments: a root-owned tool venv

    With `services: [redis]`, one Redis for the server (Debian's redis-server, its data in /var/lib/redis):
    /etc/gangway/redis.conf   gangway's settings, read after Debian's /etc/redis/redis.conf
    /etc/gangway/redis-auth.conf
                              the password (root's alone, 0600), made on the server; systemd hands it to
                              redis-server as a credential
"""

from __future__ import annotations

from dataclasses import dataclass

TOOL = "gangway"
CONFIG_ROOT = f"/etc/{TOOL}"
ACME_WEBROOT = f"/var/www/{TOOL}-acme"
RELEASE_META = f".{TOOL}/release.json"  # inside each release directory
UNIT_DIR = "/etc/systemd/system"
BOOT_WANTS = f"{UNIT_DIR}/multi-user.target.wants"
# The words gangway's own units put after "APP-" (APP-backup, APP-build-R-STEP, APP-hook-R-P-N, APP-job-N,
# APP-manage-T, APP-standby-R): a process type may not be called so, and no process unit is ever taken for one.
OWN_UNIT_WORDS = ("backup", "build", "hook", "job", "manage", "standby")
# The first line of every process type's unit file: how a provision finds the ones it wrote.
PROCESS_MARK = f"# {TOOL} process type: "

# uv is not in Debian: provision installs it from PyPI into a venv of its own, root's, shared by the server's apps.
UV_HOME = f"/opt/{TOOL}/uv"
UV = f"{UV_HOME}/bin/uv"
CACHE_ROOT = f"/var/cache/{TOOL}"

# Redis is the server's, not an app's: its files sit beside the apps' directories under CONFIG_ROOT, with
# names no app directory can have (app names hold neither "-" nor ".").
REDIS_UNIT = "redis-server.service"
REDIS_CONFIG = f"{CONFIG_ROOT}/redis.conf"
REDIS_SECRET = f"{CONFIG_ROOT}/redis-auth.conf"
REDIS_DROP_IN = f"/etc/systemd/system/{REDIS_UNIT}.d/{TOOL}.conf"
REDIS_DATA = "/var/lib/redis"
# Without `database.ca_bundle`, sslmode=verify-ca/verify-full checks the database against the system's CA store.
SYSTEM_CA_STORE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Layout:
    app: str

    # --- the app's tree -------------------------------------------------------------------------------------
    @property
    def root(self) -> str:
        return f"/srv/{self.app}"

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    @property
    def shared(self) -> str:
        return f"{self.root}/shared"

    @property
    def media(self) -> str:
        return f"{self.shared}/media"

    @property
    def env_file(self) -> str:
        return f"{self.shared}/env"

    @property
    def config_env(self) -> str:
        """The app's own variables (`fab config`): root's alone (0600), read by systemd after env_file."""
        return f"{self.shared}/config.env"

    @property
    def database_passfile(self) -> str:
        """With `database.url`, or a db host of several servers: the password, as a libpq passfile (PGPASSFILE),
        0600, the app user's."""
        return f"{self.shared}/database.pgpass"

    def upload(self, token: str, name: str) -> str:
        """Where a file sent from the operator's machine waits (releases/ is the deploy user's upload place);
        owner-only, removed by the task that sent it."""
        return f"{self.releases}/.upload-{token}-{name}"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def live_socket(self) -> str:
        """A link to the live release's socket; nginx resolves it for every new upstream connection."""
        return f"{self.root}/live.sock"

    @property
    def static(self) -> str:
        return f"{self.root}/static"

    @property
    def placeholder(self) -> str:
        """Static pages nginx serves before the first deploy and while the app is down."""
        return f"{self.root}/pages"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    def release_meta(self, release_id: str) -> str:
        return f"{self.release(release_id)}/{RELEASE_META}"

    @property
    def venvs(self) -> str:
        return f"{self.root}/venvs"

    def venv(self, requirements_hash: str) -> str:
        return f"{self.venvs}/{requirements_hash}"

    @property
    def cache(self) -> str:
        return f"{CACHE_ROOT}/{self.app}"

    @property
    def uv_cache(self) -> str:
        """uv's cache: what it downloaded and the wheels it built, reused by the next builds. The build user's
        (it writes there while building); venvs are copied out of it, never linked, so a sealed venv shares
        no file with it."""
        return f"{self.cache}/uv"

    @property
    def failed(self) -> str:
        return f"{self.root}/failed"

    @property
    def backups(self) -> str:
        return f"{self.root}/backups"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def lock(self) -> str:
        return f"{self.state}/deploy.lock"

    @property
    def lock_work(self) -> str:
        """Held (shared) by every command of a locked run; see tasks/session/lock.py."""
        return f"{self.state}/deploy.work"

    @property
    def lock_info(self) -> str:
        return f"{self.state}/deploy.lock.info"

    @property
    def maintenance_flag(self) -> str:
        """While this file exists nginx answers every request (but ACME challenges) with the maintenance page."""
        return f"{self.state}/maintenance"

    @property
    def history(self) -> str:
        """The audit log: one line per deploy, switch, rollback and failure."""
        return f"{self.state}/history.log"

    # --- config the tool renders ---------------------------------------------------------------------------
    @property
    def config_dir(self) -> str:
        return f"{CONFIG_ROOT}/{self.app}"

    @property
    def gunicorn_conf(self) -> str:
        return f"{self.config_dir}/gunicorn.conf.py"

    @property
    def nginx_backend(self) -> str:
        """The include holding nginx's proxy_pass: a placeholder page until the first deploy, then the live
        socket link for good (later switches re-point the link and leave nginx alone)."""
        return f"{self.config_dir}/backend.conf"

    @property
    def backup_script(self) -> str:
        """The scheduled backup's program (templates/backups/backup.py), root's."""
        return f"{self.config_dir}/backup.py"

    @property
    def backup_command(self) -> str:
        """The scheduled backup's pg_dump command line, as a JSON list (data the script reads), root's."""
        return f"{self.config_dir}/backup-command.json"

    @property
    def database_ca(self) -> str:
        """The CA the database's certificate is checked against: `database.ca_bundle`'s copy, or on the hosts of
        several servers the CA gangway made on the db host (on the db host itself, that CA's certificate)."""
        return f"{self.config_dir}/database-ca.pem"

    # --- a db host of several servers ------------------------------------------------------------------------
    @property
    def database_ca_key(self) -> str:
        """The key of the CA gangway made on the db host: root's alone, it never leaves the db host."""
        return f"{self.config_dir}/database-ca.key"

    @property
    def database_server_cert(self) -> str:
        return f"{self.config_dir}/database-server.pem"

    @property
    def database_server_key(self) -> str:
        """PostgreSQL's TLS key: postgres's alone (0600), as PostgreSQL requires."""
        return f"{self.config_dir}/database-server.key"

    @property
    def database_password(self) -> str:
        """The app role's password, made once on the db host: root's alone (0600)."""
        return f"{self.config_dir}/database-password"

    @property
    def database_hba(self) -> str:
        """PostgreSQL's hba_file on the db host: who may connect, from where, how."""
        return f"{self.config_dir}/pg_hba.conf"

    @property
    def media_credentials(self) -> str:
        """With `media`: the S3 store's access key id and secret as JSON, root's alone (0600), written by
        provision from the operator's environment; the app's environment file gets them from it."""
        return f"{self.config_dir}/media-credentials.json"

    @property
    def nginx_site(self) -> str:
        return f"/etc/nginx/sites-available/{self.app}"

    @property
    def nginx_site_enabled(self) -> str:
        return f"/etc/nginx/sites-enabled/{self.app}"

    # --- users ----------------------------------------------------------------------------------------------
    @property
    def build_user(self) -> str:
        """Runs pip, Django's checks and collectstatic: no sudo, and it owns only the release being built."""
        return f"{self.app}_build"

    # --- services --------------------------------------------------------------------------------------------
    @property
    def unit_template(self) -> str:
        """Gunicorn runs as APP@RELEASE.service, so two releases can run side by side during a switch."""
        return f"{self.app}@.service"

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.unit_template}"

    def unit(self, release_id: str) -> str:
        return f"{self.app}@{release_id}.service"

    def boot_link(self, release_id: str) -> str:
        """What `systemctl enable` would create: the link that makes systemd start a release at boot."""
        return f"{BOOT_WANTS}/{self.unit(release_id)}"

    # --- process types (app.processes): one template unit each, one instance per release --------------------
    def process_template(self, name: str) -> str:
        """A process type NAME runs as APP-NAME@RELEASE.service: its own template, so each type has its own stop
        timeout and `journalctl -u APP-NAME@*` shows one type. App names have no hyphen and process names none
        either, so the name cannot be read two ways; OWN_UNIT_WORDS are refused as names."""
        return f"{self.app}-{name}@.service"

    def process_template_path(self, name: str) -> str:
        return f"{UNIT_DIR}/{self.process_template(name)}"

    def process_unit(self, name: str, release_id: str) -> str:
        return f"{self.app}-{name}@{release_id}.service"

    def process_units_of(self, release_id: str) -> str:
        """A systemctl pattern for every process unit of one release (and nothing of another release)."""
        return f"{self.app}-*@{release_id}.service"

    def process_instances(self, name: str) -> str:
        """A systemctl pattern for every instance of one process type, whatever the release."""
        return f"{self.app}-{name}@*.service"

    def process_boot_link(self, name: str, release_id: str) -> str:
        return f"{BOOT_WANTS}/{self.process_unit(name, release_id)}"

    @property
    def process_template_prefix(self) -> str:
        """What every process type's template file path starts with (before NAME@.service), as others' units
        may too: the PROCESS_MARK line tells which are process types."""
        return f"{UNIT_DIR}/{self.app}-"

    def process_state_dir(self, name: str) -> str:
        """systemd's StateDirectory= of a process type: writable by it, kept across releases."""
        return f"/var/lib/{self.app}-{name}"

    @property
    def backup_unit(self) -> str:
        """The scheduled backup: APP-backup.service, started daily by APP-backup.timer."""
        return f"{self.app}-backup"

    def manage_unit(self, token: str) -> str:
        """The transient unit a `fab manage` command runs in."""
        return f"{self.app}-manage-{token}"

    def job_unit(self, name: str) -> str:
        """A scheduled management command runs as APP-job-NAME.service, started by APP-job-NAME.timer."""
        return f"{self.app}-job-{name}"

    @property
    def job_unit_prefix(self) -> str:
        """What every job unit's name starts with: app names have no hyphen, so no other app's unit does."""
        return f"{self.app}-job-"

    @property
    def runtime_dir(self) -> str:
        return f"/run/{self.app}"

    def socket(self, release_id: str) -> str:
        return f"{self.runtime_dir}/{release_id}/gunicorn.sock"

    def release_of_socket(self, target: str) -> str | None:
        """The release id in a socket path (the live link's target), or None."""
        prefix, suffix = f"{self.runtime_dir}/", "/gunicorn.sock"
        if target.startswith(prefix) and target.endswith(suffix):
            return target[len(prefix):-len(suffix)] or None
        return None

    def build_unit(self, release_id: str, step: str) -> str:
        """The transient unit a step of a release's build or migrations runs in, one name per step: systemd
        forgets a finished unit a moment after it ends, and the next step must not find it still loaded. A
        later deploy stops what an interrupted one left (APP-build-*)."""
        return f"{self.app}-build-{release_id}-{step}"

    def hook_unit(self, release_id: str, point: str, index: int) -> str:
        """The transient unit the `index`th hook (from 1) at `point` of a release's deploy runs in."""
        return f"{self.hook_unit_prefix}{release_id}-{point}-{index}"

    @property
    def hook_unit_prefix(self) -> str:
        """What every hook unit's name starts with: a deploy, and the next one, stop what an interrupted run
        left by it."""
        return f"{self.app}-hook-"

    # --- TLS ------------------------------------------------------------------------------------------------
    @property
    def certificate_dir(self) -> str:
        return f"/etc/letsencrypt/live/{self.app}"

    @property
    def acme_ca_bundle(self) -> str:
        return f"{self.config_dir}/acme-ca.pem"
