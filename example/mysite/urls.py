"""
URL configuration for mysite.

https://docs.djangoproject.com/en/5.2/topics/http/urls/
"""

from django.contrib import admin
from django.urls import path

from counter import views

urlpatterns = [
    path("", views.index, name="index"),
    # Exactly "healthz/": SECURE_REDIRECT_EXEMPT in settings.py matches this path.
    path("healthz/", views.healthz, name="healthz"),
    path("version/", views.version, name="version"),
    path("admin/", admin.site.urls),
]
