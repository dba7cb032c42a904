"""An application factory with the Flask extension (shown in docs/flask.md).

Run it with gunicorn: ``gunicorn -c flask_gunicorn_conf.py "flask_app:create_app()"``.
"""

import os

import flask

from kakashi import get_logger
from kakashi.core.async_interface import setup_async_logging
from kakashi.integrations.flask import KakashiFlask

# Configured when the module is imported: in the master with preload_app, else in
# each worker; a process forked after the backend was made gets its own queue.
setup_async_logging(service_name="shop", log_directory=os.environ.get("LOG_DIR", "logs"))
log = get_logger("shop")

# [factory]
kakashi_flask = KakashiFlask(slow_request_ms=500)


def create_app():
    app = flask.Flask(__name__)
    kakashi_flask.init_app(app)  # stored as app.extensions["kakashi"]
    app.add_url_rule("/items/<int:item_id>", view_func=show_item)
    return app


# [/factory]


def show_item(item_id):
    log.info("showing item", item_id=item_id)
    return {"id": item_id}
