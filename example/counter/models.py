from django.db import models


class Hit(models.Model):
    """One request for the home page."""

    created = models.DateTimeField(auto_now_add=True)
    path = models.CharField(max_length=255)

    def __str__(self):
        return f"{self.path} at {self.created:%Y-%m-%d %H:%M:%S}"
