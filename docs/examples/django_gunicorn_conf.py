# [conf]
# gunicorn.conf.py
from kakashi.integrations.gunicorn import on_exit, worker_exit  # noqa: F401

wsgi_app = "django_wsgi:application"  # your project's mysite.wsgi:application
# accesslog stays unset: the middleware writes the access records
# [/conf]
