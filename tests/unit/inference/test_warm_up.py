"""The worker's prewarm pays the first image's one-off costs: the first request imports nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import image_bytes, make_tiny_model

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def test_after_the_prewarm_the_first_classification_imports_no_module(tmp_path: Path) -> None:
    card = make_tiny_model(tmp_path / "model")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    code = (
        "import json, os, sys\n"
        f"os.environ.update(MODEL_SOURCE='local', MODEL_PATH={str(card)!r}, INFERENCE_BACKEND='onnxruntime')\n"
        "from functions.dependencies import prewarm_model\n"
        "from pathlib import Path\n"
        "from shared_code.inference.classifier import load_classifier\n"
        "from shared_code.inference.pipeline import ClassificationPipeline\n"
        "thread = prewarm_model()\n"
        "thread.join(60)\n"
        "pipeline = ClassificationPipeline(load_classifier(Path(os.environ['MODEL_PATH']), backend='onnxruntime'))\n"
        "before = set(sys.modules)\n"
        f"pipeline.classify_bytes(open({str(photo)!r}, 'rb').read())\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    # a fresh interpreter: what was imported is a property of the whole process
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
