"""How many rows each model has in the database, as the code it runs in sees it. Run inside the release's
Django (`manage.py shell`): the apps are loaded.

Input (JSON): {"models": the models, as "app_label.model", "every": true to count every model the code has
too (what `manage.py flush` would empty)}.
Prints one report line: {"rows": {model: count}, "unknown": [the models the code does not have]}.
"""

import json
import sys

from django.apps import apps

args = json.load(sys.stdin)
labels = set(args["models"])
if args.get("every"):
    labels |= {model._meta.label_lower for model in apps.get_models()}
rows, unknown = {}, []
for label in sorted(labels):
    try:
        rows[label] = apps.get_model(label)._base_manager.count()
    except LookupError:
        unknown.append(label)
print("@gangway " + json.dumps({"rows": rows, "unknown": unknown}))
