"""Composition root of the monitor app: the drift timer, which also runs the retraining sweep. Nothing else.

Deployed as a second Function App from the same tree with PYTHON_SCRIPT_FILE_NAME=monitor_app.py and
requirements-monitor.txt (Evidently, pandas, azure-ai-ml on top of the API's closure): the classify path scales
with traffic and stays lean, while this app runs one instance per tick (docs/operations.md).
"""

from __future__ import annotations

import azure.functions as func

from functions.drift_timer import blueprint as drift_blueprint
from functions.telemetry_setup import configure_from_settings

configure_from_settings(service_name="imgclass-monitor")
app = func.FunctionApp()
app.register_functions(drift_blueprint)
