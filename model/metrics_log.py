"""Training parameters and metrics, logged the MLflow way and always kept as plain files.

When `mlflow` is importable (an Azure ML job: its environments carry mlflow + azureml-mlflow and set the
tracking URI, so the run's params and metric charts appear in the studio without any configuration), every
call also goes to `mlflow.log_param` / `mlflow.log_metric(step=)` / `mlflow.log_artifact`. The model venv
does not install mlflow (mlflow-skinny alone pulls ~40 packages: databricks-sdk, fastapi, uvicorn, ...).

Either way the same values are written under the metrics folder:

    params.json     {"key": "value", ...}                       (MLflow params are strings)
    metrics.jsonl   {"key", "value", "step", "timestamp"} a line (timestamp in ms, as MLflow stores it)

which is MLflow's own data model (key, value, step, timestamp), one JSON object a line, readable with
`pandas.read_json(path, lines=True)` or replayable into any tracking server with `mlflow.log_metric`.
Set IMGCLASS_NO_MLFLOW=1 to skip mlflow even where it is installed.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"


def _mlflow() -> ModuleType | None:
    if os.environ.get("IMGCLASS_NO_MLFLOW"):
        return None
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        return None


class MetricsLog:
    """Params and step-wise metrics to files under `folder`, and to mlflow when it is importable."""

    def __init__(self, folder: Path, *, use_mlflow: bool = True) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.params: dict[str, str] = {}
        self._metrics_path = folder / METRICS_FILE
        self._metrics_path.write_text("", encoding="utf-8")
        self._mlflow = _mlflow() if use_mlflow else None
        if self._mlflow is not None:
            logger.info("logging params and metrics to mlflow (%s)", self._mlflow.get_tracking_uri())

    @property
    def uses_mlflow(self) -> bool:
        return self._mlflow is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        values = {key: str(value) for key, value in params.items()}
        self.params.update(values)
        (self.folder / PARAMS_FILE).write_text(json.dumps(self.params, indent=2, sort_keys=True) + "\n",
                                               encoding="utf-8")
        if self._mlflow is not None:
            self._mlflow.log_params(values)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        value = float(value)
        if not math.isfinite(value):
            logger.warning("metric %s is %s at step %d", key, value, step)
        record = {"key": key, "value": value, "step": step, "timestamp": int(time.time() * 1000)}
        with self._metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._mlflow is not None:
            self._mlflow.log_metric(key, value, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def log_artifact(self, path: Path) -> None:
        """Attach a file to the mlflow run (the local files already sit in the version folder)."""
        if self._mlflow is not None:
            self._mlflow.log_artifact(str(path))


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in logging order."""
    path = folder / METRICS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
