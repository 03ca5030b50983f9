"""gangway: take a Django project from runserver to a production Debian server.

    fab --list                     the tasks
    fab provision                  set up the servers in inventory/production.yaml
    fab deploy                     ship HEAD of the project (app.source in the inventory)
    fab rollback                   back to the previous good release
    fab -H root@HOST provision     one server, defaults, no inventory file needed
"""

from invoke import Collection

from tasks.deploy import deploy, list_releases, rollback, unlock
from tasks.provision import provision

namespace = Collection(provision, deploy, rollback, list_releases, unlock)
namespace.configure({"gangway": {"inventory": None, "known_hosts": None}})
