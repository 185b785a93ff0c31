"""Composition root of the API app: the HTTP API (ASGI) plus the blob trigger. Nothing else lives here.

The drift timer and the retraining sweep live in `monitor_app.py`, the entry script of the monitor app
(PYTHON_SCRIPT_FILE_NAME=monitor_app.py): this package never indexes the timer, so it needs no DRIFT_SCHEDULE
and never imports the drift report (Evidently) or the Azure ML SDK (docs/operations.md).
"""

from __future__ import annotations

from functions.dependencies import prewarm_model

# The model loads on another core while the API modules below import (cold start: docs/benchmark.md).
prewarm_model()

import azure.functions as func  # noqa: E402

from functions.blob_trigger import blueprint as blob_blueprint  # noqa: E402
from functions.http_api import create_api  # noqa: E402
from functions.telemetry_setup import configure_from_settings  # noqa: E402

configure_from_settings()
# Auth is enforced by the API itself (bearer JWT), so the Functions key layer is off.
app = func.AsgiFunctionApp(app=create_api(), http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(blob_blueprint)
