# [conf]
# gunicorn.conf.py
from kakashi.integrations.gunicorn import on_exit, worker_exit  # noqa: F401

workers = 4
graceful_timeout = 30
# accesslog stays unset: the extension writes the access records
# [/conf]
