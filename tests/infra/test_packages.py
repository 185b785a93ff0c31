"""The two deployment packages (`make package`): what each ships, what it installs, and that the API's is lean.

The slow test builds dist/api as it deploys (PyPI wheels for Linux x86-64, CPython 3.11; dependencies already
installed there are reused while the pins are unchanged), then imports the API from the package alone, with no
site-packages but its own, and classifies an image: the drift report and the Azure ML SDK are not there at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import image_bytes, make_tiny_model
from tests.infra.bicep_model import REPO_ROOT
from tools.package import (
    OPENVINO_UNUSED,
    PACKAGES,
    SITE_PACKAGES,
    build,
    flattened_requirements,
    megabytes,
    read_rules,
    shipped_files,
    tree_size,
)

pytestmark = pytest.mark.unit

API_LIMIT_MB = 300.0  # issue 13's target for the API package without an optional inference backend
# Issue 15: the limit rises by the size of the faster backend the API ships (OpenVINO, chosen by `auto`)
BACKEND_DISTRIBUTIONS = ("openvino",)
BACKEND_LIMIT_MB = 200.0
MONITOR_ONLY = ("evidently", "pandas", "azure-ai-ml")
FORBIDDEN_IMPORTS = ("evidently", "pandas", "azure.ai.ml", "scipy", "sklearn", "plotly", "statsmodels", "torch")


def _names(requirements: list[str]) -> set[str]:
    return {line.split("==")[0].split("[")[0].lower() for line in requirements}


def test_the_api_ships_its_entry_script_and_page_and_nothing_of_the_monitor() -> None:
    shipped = {path.as_posix() for path in shipped_files(PACKAGES["api"])}
    assert {"function_app.py", "host.json"} <= shipped
    assert any(path.startswith("web/") for path in shipped) and any(p.startswith("shared_code/") for p in shipped)
    assert "monitor_app.py" not in shipped
    for excluded in ("tests/", "model/", "devstack/", "docs/", "infra/", "tools/", "dist/", ".venv", "node_modules/"):
        assert not any(path.startswith(excluded) for path in shipped), excluded
    assert not any(path.endswith((".pyc", "requirements-monitor.txt", "requirements-dev.txt")) for path in shipped)


def test_the_monitor_ships_its_entry_script_and_no_page() -> None:
    shipped = {path.as_posix() for path in shipped_files(PACKAGES["monitor"])}
    assert {"monitor_app.py", "host.json"} <= shipped
    assert "function_app.py" not in shipped and not any(path.startswith("web/") for path in shipped)


def test_requirements_split_the_monitor_closure_from_the_api() -> None:
    api = flattened_requirements(REPO_ROOT / "requirements.txt")
    monitor = flattened_requirements(REPO_ROOT / "requirements-monitor.txt")
    assert not _names(api) & set(MONITOR_ONLY), "requirements.txt is what the API deploys"
    assert set(api) <= set(monitor) and set(MONITOR_ONLY) <= _names(monitor)
    assert all("==" in line for line in monitor), "every dependency is pinned"
    dev = (REPO_ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    assert "-r requirements.txt" in dev and "-r requirements-monitor.txt" in dev


def test_each_entry_script_indexes_only_its_own_triggers() -> None:
    code = (
        "import importlib, json, os, sys\n"
        "os.environ.setdefault('AUTH_SIGNING_KEY', 'x' * 40)\n"
        "found = {}\n"
        "for script in ('function_app', 'monitor_app'):\n"
        "    app = importlib.import_module(script).app\n"
        "    found[script] = sorted(json.loads(f.get_function_json())['bindings'][0]['type'] "
        "for f in app.get_functions())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'evidently', 'pandas'} "
        "or m.startswith('azure.ai.ml'))\n"
        "print(json.dumps({'found': found, 'heavy_after_both': heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])["found"]
    assert found["function_app"] == ["blobTrigger", "blobTrigger", "httpTrigger"]
    assert found["monitor_app"] == ["timerTrigger"]


@pytest.mark.slow
def test_the_built_api_package_is_lean_and_runs_from_its_own_dependencies(tmp_path: Path) -> None:
    package = build(PACKAGES["api"], REPO_ROOT / "dist", reuse=True)
    site = package / SITE_PACKAGES
    installed = {entry.name.lower() for entry in site.iterdir()}
    for name in ("evidently", "pandas", "scipy", "sklearn", "plotly", "statsmodels", "pyarrow"):
        assert name not in installed, name
    assert not (site / "azure" / "ai" / "ml").exists()
    assert not (package / "monitor_app.py").exists() and (package / "function_app.py").exists()
    size = megabytes(tree_size(package))
    backend = sum(megabytes(tree_size(entry)) for entry in site.iterdir()
                  if entry.name.lower().split("-")[0] in BACKEND_DISTRIBUTIONS)
    print(f"API package: {size} MB installed, of which {backend:.1f} MB the OpenVINO backend")
    assert backend <= BACKEND_LIMIT_MB, f"the OpenVINO backend is {backend:.1f} MB installed"
    limit = API_LIMIT_MB + backend
    assert size <= limit, f"the API package is {size} MB installed (limit {limit:.1f} MB)"

    card = make_tiny_model(tmp_path / "model")
    picture = tmp_path / "photo.png"
    picture.write_bytes(image_bytes())
    code = (
        "import json, os, sys\n"
        f"sys.path[:0] = [{str(package)!r}, {str(site)!r}]\n"
        "os.environ.update(AUTH_SIGNING_KEY='x' * 40, MODEL_SOURCE='local', "
        f"MODEL_PATH={str(card)!r})\n"
        "import function_app\n"
        "from shared_code.inference.model_repository import ModelProvider\n"
        f"data = open({str(picture)!r}, 'rb').read()\n"
        f"outcome = ModelProvider(local_path={str(card)!r}).current().classify_bytes(data)\n"
        "assert outcome.predictions, outcome\n"
        # the pruned OpenVINO (no GPU/NPU plugins, ONNX and IR frontends only) still compiles and runs on the CPU
        "import openvino\n"
        "from pathlib import Path\n"
        "from shared_code.inference.classifier import load_classifier\n"
        "from shared_code.inference.pipeline import ClassificationPipeline\n"
        f"engine = load_classifier(Path({str(card)!r}), backend='openvino')\n"
        "assert engine.backend_name == 'openvino', engine.choice\n"
        "assert ClassificationPipeline(engine).classify_bytes(data).backend.startswith('openvino')\n"
        "devices = openvino.Core().available_devices\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {{'evidently', 'pandas', 'torch'}} "
        "or m.startswith('azure.ai.ml'))\n"
        "outside = sorted({getattr(m, '__file__', None) or '' for m in list(sys.modules.values())} - {''})\n"
        f"foreign = [f for f in outside if 'site-packages' in f and not f.startswith({str(site)!r})]\n"
        "print(json.dumps({'heavy': heavy, 'foreign': foreign[:5], 'devices': devices}))\n"
    )
    # The package ships unchecked-hash bytecode for all of it: a worker's package is read-only, so whatever lacked
    # bytecode would be compiled again at every cold start.
    pyc = package / "__pycache__" / f"function_app.{sys.implementation.cache_tag}.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01, "not unchecked-hash bytecode"
    assert not [rule for rule in read_rules(package / ".funcignore") if "pyc" in rule or "__pycache__" in rule]
    files_before = {path for path in package.rglob("*") if path.is_file()}
    # -I -S: no user site, no site-packages: only the standard library and the package itself
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=package, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(str(path.relative_to(package)) for path in package.rglob("*")
                     if path.is_file() and path not in files_before)
    assert written == [], f"importing the package compiled modules it did not ship bytecode for: {written[:10]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "foreign": [], "devices": ["CPU"]}, report
    for pattern in OPENVINO_UNUSED:
        assert not list(site.glob(pattern)), pattern
