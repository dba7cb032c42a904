# [worker]
# workers.py; run: gunicorn -k workers.QuietUvicornWorker app:app
from uvicorn_worker import UvicornWorker  # or uvicorn.workers in older uvicorn


class QuietUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "access_log": False}


# [/worker]
