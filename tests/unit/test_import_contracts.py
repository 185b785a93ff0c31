"""The import contracts (`make lint` runs `lint-imports`) hold, and break when a layer is crossed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared_code", "functions", "devstack", "model", "tools", "bench", "imgclass_client")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".venv", "artifacts", "*.onnx")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=ignore)
    shutil.copy2(REPO_ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, check=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports is not installed in this venv (requirements-dev.txt pins import-linter)")
    return _copy_tree(tmp_path_factory.mktemp("contracts"))


def test_the_contracts_hold_on_this_checkout(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("shared_code/inference/pipeline.py", "import shared_code.results.store", "Inference knows nothing"),
    ("shared_code/monitoring/drift.py", "import shared_code.identity.auth", "Monitoring and identity"),
    ("shared_code/results/service.py", "import functions.dependencies", "never imports the adapters"),
    ("shared_code/inference/imaging.py", "import shared_code.composition", "Layers of the core"),
    ("functions/http_api.py", "import shared_code.cosmos", "Only the composition root"),
])
def test_a_crossed_layer_breaks_lint(tree: Path, tmp_path: Path, module: str, planted: str, contract: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    path = broken / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{planted}  # planted by the test\n", encoding="utf-8")
    result = _lint(broken)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout
