"""A toy FunctionApp for the host tests: a FastAPI app behind AsgiFunctionApp, a plain HTTP function,
a polling blob trigger on `<container>/{user}/{name}`, an Event Grid-sourced one on `<eg container>/{user}/{name}`
and a timer. It records every invocation as a JSON line in
the file named by TOY_EVENTS, which the tests read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import azure.functions as func
from fastapi import FastAPI, Request

api = FastAPI()


def record(**event: Any) -> None:
    """Append one event; O_APPEND keeps concurrent small writes whole."""
    line = (json.dumps(event) + "\n").encode()
    descriptor = os.open(os.environ["TOY_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


@api.get("/api/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/api/toy/echo/{word}")
def echo(word: str, request: Request) -> dict[str, Any]:
    return {"word": word, "path": request.url.path, "query": dict(request.query_params),
            "greeting": os.environ.get("TOY_GREETING"), "container": os.environ.get("TOY_CONTAINER")}


@api.post("/api/toy/length")
async def length(request: Request) -> dict[str, int]:
    return {"length": len(await request.body())}


app = func.AsgiFunctionApp(app=api, http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="plain/{item}", methods=["GET"])
def plain(req: func.HttpRequest) -> func.HttpResponse:
    body = json.dumps({"item": req.route_params["item"], "url": req.url, "q": req.params.get("q")})
    return func.HttpResponse(body, status_code=201, mimetype="application/json")


@app.blob_trigger(arg_name="upload", path="%TOY_CONTAINER%/{user}/{name}", connection="TOY_STORAGE")
def on_upload(upload: func.InputStream, user: str, name: str, context: func.Context) -> None:
    data = upload.read()
    properties = getattr(upload, "blob_properties", None) or {}  # the concrete InputStream carries them
    record(event="blob", blob=upload.name, user=user, name=name, etag=properties.get("ETag"), length=upload.length,
           head=data[:8].decode(errors="replace"), retry=context.retry_context.retry_count)
    if data.startswith(b"fail"):
        raise RuntimeError("toy failure")
    marker = Path(os.environ["TOY_SLOW_MARKER"])
    if data.startswith(b"slow") and not marker.exists():
        marker.touch()  # only the first delivery hangs: the test kills the host during it
        time.sleep(120)


@app.blob_trigger(arg_name="upload", path="%TOY_EG_CONTAINER%/{user}/{name}", connection="TOY_STORAGE",
                  source=func.BlobSource.EVENT_GRID)
def on_event(upload: func.InputStream, user: str, name: str, context: func.Context) -> None:
    data = upload.read()
    properties = getattr(upload, "blob_properties", None) or {}
    record(event="eg", blob=upload.name, user=user, name=name, etag=properties.get("ETag"), length=upload.length,
           content_length=properties.get("ContentLength"), uri=upload.uri, data=data.decode(errors="replace"),
           retry=context.retry_context.retry_count)
    if data.startswith(b"fail"):
        raise RuntimeError("toy failure")
    marker = Path(os.environ["TOY_EG_SLOW_MARKER"])
    if data.startswith(b"slow") and not marker.exists():
        marker.touch()  # only the first delivery hangs: the test kills the host during it
        time.sleep(120)


@app.timer_trigger(arg_name="timer", schedule="%TOY_SCHEDULE%", run_on_startup=True, use_monitor=False)
def tick(timer: func.TimerRequest) -> None:
    record(event="timer", past_due=timer.past_due)
