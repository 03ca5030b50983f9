"""gangway: take a Django project from runserver to a production Debian server.

    fab --list                     the tasks
    fab provision                  set up the servers in inventory/production.yaml
    fab deploy                     ship HEAD of the project (app.source in the inventory)
    fab rollback                   back to the previous good release
    fab -H root@HOST provision     one server, defaults, no inventory file needed

A Django project uses the same tasks from its own fabfile (see tasks/collection.py); this repository's fabfile
keeps its inventory files in inventory/.
"""

from tasks.collection import namespace_for

namespace = namespace_for(__file__, inventory_dir="inventory")
