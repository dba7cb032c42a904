"""Run asgi_app.py with uvicorn, its own records going through Kakashi (docs/stdlib.md)."""

import os

import uvicorn
from asgi_app import app

import kakashi
from kakashi.core.async_backend import install_sigterm_handler

# [run]
kakashi.capture_stdlib()
install_sigterm_handler()  # uvicorn's last records come after the lifespan's drain
uvicorn.run(app, port=int(os.environ.get("PORT", "8000")), log_config=None, log_level="info")
# [/run]
