"""settings.py of a Django site that logs with Kakashi (shown in docs/django.md)."""

import os

SECRET_KEY = "docs-example"
ALLOWED_HOSTS = ["testserver", "localhost"]
ROOT_URLCONF = "django_urls"

# [middleware]
MIDDLEWARE = [
    "kakashi.integrations.django.KakashiMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # ...
]
KAKASHI = {
    "trusted_proxies": ["10.0.0.0/8"],  # X-Forwarded-For is believed from these only
    "exclude_paths": ["/health/"],  # no access record (the id is still echoed)
    "slow_request_ms": 500,  # a "slow request" warning from half a second
}
# [/middleware]

# [logging]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "kakashi": {"class": "kakashi.integrations.logging.KakashiHandler"},
        # Not an empty handler list: logging would then print WARNING and above to
        # stderr itself (logging.lastResort).
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"handlers": ["kakashi"], "level": "INFO"},
    "loggers": {
        "django": {"handlers": ["kakashi"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["null"], "propagate": False},
        "django.request": {"handlers": ["null"], "propagate": False},
    },
}
# [/logging]

# [kakashi]
from kakashi.core.async_interface import setup_async_logging

# JSON lines in logs/app.log, written by the async backend's worker; every process
# (each gunicorn worker, runserver's reloaded child) configures its own when it
# imports the settings.
setup_async_logging(
    environment="production",
    service_name="shop",
    log_directory=os.environ.get("LOG_DIR", "logs"),
)
# [/kakashi]
