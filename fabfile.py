"""gangway: take a Django project from runserver to a production Debian server.

    fab --list                 the tasks
    fab provision              set up the servers in inventory/production.yaml
    fab -H root@HOST provision set up one server with defaults (no inventory file needed)
"""

from invoke import Collection

from tasks.provision import provision

namespace = Collection(provision)
namespace.configure({"gangway": {"inventory": None}})
