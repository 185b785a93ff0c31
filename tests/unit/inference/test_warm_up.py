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


REAL_MODEL = ROOT / "model" / "artifacts" / "efficientnet_lite0" / "1" / "model.card.json"


def test_the_prewarm_thread_is_not_a_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_SOURCE", "local")
    monkeypatch.setenv("MODEL_PATH", str(make_tiny_model(tmp_path / "model")))
    monkeypatch.setenv("INFERENCE_BACKEND", "onnxruntime")
    from functions.dependencies import prewarm_model  # noqa: PLC0415

    thread = prewarm_model()
    assert thread is not None
    thread.join(60)
    assert thread.daemon is False  # interpreter exit waits for it instead of tearing the engine down under it


@pytest.mark.skipif(not REAL_MODEL.exists(), reason="needs the exported real-weights model (make model)")
@pytest.mark.parametrize("delay_s", [0.02, 0.05, 0.1, 0.15])
def test_a_process_exiting_while_the_prewarm_loads_exits_cleanly(delay_s: float) -> None:
    # Exit while ONNX Runtime builds its session on the prewarm thread: with a daemon thread the C++ runtime is
    # torn down under it and the process aborts (SIGABRT, rc 134) in most runs at these delays.
    code = ("import time\nfrom functions.dependencies import prewarm_model\n"
            f"assert prewarm_model() is not None\ntime.sleep({delay_s})\n")
    env = {"PATH": "/usr/bin:/bin", "MODEL_SOURCE": "local", "MODEL_PATH": str(REAL_MODEL),
           "INFERENCE_BACKEND": "onnxruntime"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_components_are_built_once_when_the_prewarm_and_a_request_ask_together(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from functions import dependencies  # noqa: PLC0415

    builds: list[object] = []

    class SlowComponents:  # stands in for the real build (a Cosmos connection): slow enough for callers to overlap
        def __init__(self, settings: object) -> None:
            time.sleep(0.2)
            builds.append(self)

    def settings() -> object:
        return object()

    settings.cache_clear = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setattr(dependencies, "Components", SlowComponents)
    monkeypatch.setattr(dependencies, "get_settings", settings)
    dependencies.reset()
    try:
        got: list[object] = []
        callers = [threading.Thread(target=lambda: got.append(dependencies.get_components())) for _ in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        assert len(builds) == 1
        assert got == [builds[0]] * 4
    finally:
        dependencies.reset()
