"""How many Gunicorn workers a web instance runs: the one rule, pure.

Gunicorn's config file (templates/gunicorn/gunicorn.conf.py.j2) carries this file's text, so the rule runs on
the server each time an instance starts, with the cores and memory it sees then; the inventory gives the rest
(app.workers, whether a standby runs, how many process types). Why at start rather than from facts read at
provision: a server resized by its provider is counted right at the next deploy, with no provision, and the
config file stays a function of the inventory alone, which is what a deploy compares with the server's copy
(tasks/provisioning/served.py). Nothing here imports anything, and no `from __future__`: it runs inside that file.
"""

# The memory kept free: the page cache, a migration, a deploy's third instance (the new release starts beside
# the live one and the standby), bursts. The goal: a 1 GB server keeps 40 % free with the live release, the
# standby and one process type.
FREE_SHARE = 0.40
# Estimated sizes, MiB of PSS (a process's own pages plus its share of those it shares). bench/workers.py reads,
# on the example app: a Gunicorn master 10, a worker that has served 36, a worker process that imports Django 39,
# the rest of the server 106. Real apps import more, so each is counted about half as large again or more.
OTHERS_MIB = 150   # the rest of the server: PostgreSQL, nginx, systemd, journald, sshd, fail2ban
MASTER_MIB = 15    # Gunicorn's master: it does not import the app
WORKER_MIB = 60    # one worker, the app imported and serving
PROCESS_MIB = 100  # one process type of app.processes (a Celery worker with its pool, an RQ worker)
# Gunicorn's rule of thumb is 2 per core plus 1; past this many, a big machine runs copies of the app it
# rarely needs (and each holds database connections).
MAX_WORKERS = 9


def cores_allow(cores):
    """Gunicorn's rule of thumb, capped."""
    return min(cores * 2 + 1, MAX_WORKERS)


def memory_allows(memory_mib, standby, processes):
    """Workers per web instance that fit in `memory_mib` with FREE_SHARE left free: the rest of the server,
    each process type, and the live instance plus, with `standby`, the previous release's, each a master and
    its workers. Zero or less when even one does not fit."""
    budget = memory_mib * (1 - FREE_SHARE) - OTHERS_MIB - processes * PROCESS_MIB
    instances = 2 if standby else 1
    return int((budget / instances - MASTER_MIB) // WORKER_MIB)


def web_workers(cores, memory_mib, standby, processes):
    """The least of what the cores and the memory allow, and never fewer than 1: a site that serves slowly beats
    one that does not start."""
    return max(1, min(cores_allow(cores), memory_allows(memory_mib, standby, processes)))
