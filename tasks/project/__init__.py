"""The user's Django project on this machine: its source, settings, readiness and what breaks it."""
