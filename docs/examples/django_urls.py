"""urls.py of the example site (docs/examples/django_settings.py names it)."""

import logging

from django.http import HttpResponse
from django.urls import path

import kakashi


def show_item(request, pk):
    kakashi.get_logger("shop").info("showing item", pk=pk)
    logging.getLogger("payments").warning("card declined", extra={"pk": pk})
    return HttpResponse(f"item {pk}")


def health(request):
    return HttpResponse("ok")


def boom(request):
    raise RuntimeError("boom")


urlpatterns = [
    path("items/<int:pk>/", show_item),
    path("health/", health),
    path("boom/", boom),
]
