"""A Starlette application logging with Kakashi's ASGI middleware, served by uvicorn
(``serve.py``) or by gunicorn with ``workers.QuietUvicornWorker`` (docs/asgi.md,
docs/stdlib.md)."""

import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import kakashi
from kakashi.core.async_interface import setup_async_logging
from kakashi.integrations.asgi import KakashiMiddleware

setup_async_logging(service_name="shop", log_directory=os.environ.get("LOG_DIR", "logs"))
kakashi.capture_stdlib()  # the server's own records (startup, errors) too
log = kakashi.get_logger("shop")


async def show_item(request):
    log.info("showing item", item_id=request.path_params["item_id"])
    return JSONResponse({"id": request.path_params["item_id"]})


app = KakashiMiddleware(Starlette(routes=[Route("/items/{item_id:int}", show_item)]))
