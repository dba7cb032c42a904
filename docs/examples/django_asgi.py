"""asgi.py of the example site (shown in docs/django.md)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")

# [asgi]
from django.core.asgi import get_asgi_application

from kakashi.integrations.django import drain_at_shutdown

application = drain_at_shutdown(get_asgi_application(), timeout=5.0)
# [/asgi]
