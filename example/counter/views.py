import logging
import os

from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from mysite.version import VERSION

from .models import Hit

logger = logging.getLogger(__name__)


def release():
    """The release that is answering: gangway sets GANGWAY_RELEASE for each one it starts."""
    return os.environ.get("GANGWAY_RELEASE") or "unknown"


@never_cache
@require_safe
def index(request):
    Hit.objects.create(path=request.path)
    context = {
        "version": VERSION,
        "release": release(),
        "hits": Hit.objects.count(),
    }
    return render(request, "counter/index.html", context)


@never_cache
@require_safe
def healthz(request):
    """Is this release able to serve? 200 if it can reach its database, 503 if not. Records nothing."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.error("health check failed: the database is unavailable", exc_info=True)
        return JsonResponse(
            {"status": "error", "error": str(exc), "version": VERSION, "release": release()},
            status=503,
        )
    return JsonResponse({"status": "ok", "version": VERSION, "release": release()})


@never_cache
@require_safe
def version(request):
    """Which code answered, as "<version> <release>". Cheap enough to hit thousands of times: no database."""
    return HttpResponse(f"{VERSION} {release()}", content_type="text/plain; charset=utf-8")
