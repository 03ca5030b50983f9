"""Defaults, in one place. Everything here can be overridden in the inventory unless it says otherwise."""

APP_NAME = "app"
DEPLOY_USER = "deploy"
ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
MAX_UPLOAD_MB = 20
# `fab logs` shows this many of the latest lines unless --lines says otherwise.
LOG_LINES = 100

# Deploys.
REQUIREMENTS = "requirements.txt"
HEALTH_CHECK = "/"
KEEP_RELEASES = 5
KEEP_FAILED = 3
# Database dumps taken before migrations: the newest this many are kept.
KEEP_BACKUPS = 10
# Scheduled backups (a systemd timer): daily at this server time, plus up to this long at random; kept by age.
BACKUP_TIME = "03:15"
BACKUP_DELAY = "30min"
KEEP_DAILY = 7
KEEP_WEEKLY = 4
# What `Retry-After` tells clients while the site is in maintenance mode, in seconds.
MAINTENANCE_RETRY_AFTER_S = 300
HEALTH_TIMEOUT_S = 30
# A release hook (app.hooks) that runs longer is stopped and fails its deploy.
HOOK_TIMEOUT_S = 300
# After a switch the release that was live stays warm this long, so that rolling back to it is instant.
STANDBY_MINUTES = 10
# Process types (app.processes). A stopped process gets SIGTERM (Celery's warm shutdown, RQ's and django-tasks'
# "finish the current job, take no new one") and this long to finish before systemd kills it; a task cut off
# then goes back to the queue if the queue acknowledges late (Celery's acks_late, RQ's abandoned-job handling).
PROCESS_STOP_TIMEOUT_S = 60
# A new release's process must stay up this long (active, not restarted) before traffic switches to it.
PROCESS_SETTLE_S = 5
# How long systemd waits before restarting a process that exited with an error.
PROCESS_RESTART_S = 2
# A web instance (its Gunicorn unit) runs at most this many tasks, processes and threads (TasksMax=; not in the
# inventory): room for app.workers' largest value, each worker with its threads. Without app.workers,
# tasks/sizing.py sizes them.
GUNICORN_TASKS_MAX = 256
MOST_WORKERS = 32
# Added to the venv when the project's requirements do not name Gunicorn.
GUNICORN = "gunicorn>=23,<24"
# How Gunicorn serves the app (app.server): Django's WSGI application with its own sync workers, or its ASGI
# application (async views, websockets) with Uvicorn's worker class.
SERVERS = ("wsgi", "asgi")
SERVER = "wsgi"
# The ASGI server: the worker class the uvicorn-worker package keeps (uvicorn.workers is deprecated), and
# uvicorn with its "standard" extras: without a websocket library (websockets) uvicorn refuses every websocket
# handshake. Each is added to the venv when the project's requirements do not name it.
UVICORN_WORKER_CLASS = "uvicorn_worker.UvicornWorker"
UVICORN_WORKER = "uvicorn-worker>=0.4,<1"
UVICORN = "uvicorn[standard]>=0.36,<1"

# uv builds the releases' Python environments. It is not in Debian: provision installs a version in this range
# ([at least, below)) from PyPI; uv changes its command line between minor versions before 1.0.
UV_VERSIONS = ((0, 13), (0, 14))
UV = "uv>={},<{}".format(*(".".join(map(str, v)) for v in UV_VERSIONS))

# Below this much memory a swap file keeps pip builds and migrations from being killed by the OOM killer.
SWAP_BELOW_MIB = 2048
SWAP_SIZE_MIB = 1024

# What the server gets. Debian's own packages: security updates come with the distribution.
PACKAGES = (
    "python3", "python3-venv", "python3-dev", "build-essential", "libpq-dev", "pkg-config",
    "nginx", "certbot", "nftables", "unattended-upgrades", "systemd-timesyncd",
    "sudo", "curl", "ca-certificates", "openssl",
    # Hardening: restart services after library updates, verify installed files against the packages'
    # checksums, show what an upgrade changes, refuse weak passwords should anyone ever set one, block
    # addresses that keep failing to log in (fail2ban reads the journal through python3-systemd).
    "needrestart", "debsums", "apt-listchanges", "libpam-pwquality", "fail2ban", "python3-systemd",
)
# The database: Debian's PostgreSQL server on the app's own server; with `database.url` (a PostgreSQL of
# your own, e.g. a managed one) only Debian's client (psql, pg_dump, pg_restore) instead.
POSTGRES_SERVER = ("postgresql",)
POSTGRES_CLIENT = ("postgresql-client",)
# A db host of several servers: PostgreSQL's port on its private address, open to the app hosts alone.
POSTGRES_PORT = 5432
# The CA gangway makes on a db host (its key never leaves it) and the server certificate it signs, in days: the
# certificate is made anew when it has fewer than POSTGRES_CERT_RENEW_DAYS left (or names another address).
POSTGRES_CA_DAYS = 3650
POSTGRES_CERT_DAYS = 825
POSTGRES_CERT_RENEW_DAYS = 30
# `database.password_env`: the variable of the operator's environment `fab provision` reads the password from.
DATABASE_PASSWORD_ENV = "GANGWAY_DATABASE_PASSWORD"
# `media`: uploads in an existing S3-compatible store, shared by every web server. The app's key and secret
# are read from these variables of the operator's environment by `fab provision`, never from the inventory.
MEDIA_ACCESS_KEY_ENV = "GANGWAY_MEDIA_ACCESS_KEY_ID"
MEDIA_SECRET_KEY_ENV = "GANGWAY_MEDIA_SECRET_ACCESS_KEY"
# The region requests are signed for (SigV4): stores that have no regions accept this one.
MEDIA_REGION = "us-east-1"
# The store must answer provision's and status's signed request within this many seconds.
MEDIA_TIMEOUT_S = 10
# Installed too when a release hook runs `manage.py compilemessages` (it needs msgfmt).
GETTEXT = ("gettext",)

# `services: [redis]`: Debian's redis-server, on the loopback address only. The app's cache and sessions use
# database 0 (REDIS_URL), Celery's queue database 1 (CELERY_BROKER_URL): clearing the cache never empties the
# queue.
REDIS_PACKAGE = "redis-server"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DATABASES = {"REDIS_URL": 0, "CELERY_BROKER_URL": 1}

# `fab status`: what needs attention.
STATUS_CERT_DAYS = 14      # a certificate with fewer days left (certbot renews 30 days ahead: renewal is failing)
STATUS_DISK_PERCENT = 90   # a file system fuller than this
STATUS_MEMORY_PERCENT = 90  # memory in use beyond this (what the kernel could not free at once)
STATUS_BACKUP_DAYS = 2     # the newest backup older than this, when backups are scheduled

# The roles a host can hold (README, "Several servers"). A single host with no roles holds these.
ROLES = ("web", "worker", "db", "lb")
SINGLE_SERVER_ROLES = ("web", "worker", "db")
# A rolling deploy switches this many web servers at once (deploy.batch): one keeps the most serving.
DEPLOY_BATCH = 1

# The load balancer (role lb): a web host that fails this many requests in a row (connection refused or timed
# out, 502/503/504) is left out for this many seconds, then tried again with one request (nginx's passive health
# checks: its open-source build has no active ones).
LB_MAX_FAILS = 1
LB_FAIL_TIMEOUT_S = 10
LB_CONNECT_TIMEOUT_S = 2   # a web host that takes longer to accept a connection is taken for down
