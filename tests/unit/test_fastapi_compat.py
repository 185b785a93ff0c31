"""The API never imports pydantic.v1 (FastAPI's v1 checks are answered without it), and v1 models stay refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    # a fresh interpreter: whether a module was ever imported is a property of the whole process
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_building_the_api_and_its_document_never_imports_pydantic_v1() -> None:
    code = ("import sys, warnings\nwarnings.simplefilter('ignore')\nfrom functions.http_api import create_api\n"
            "create_api().openapi()\nprint('pydantic.v1' in sys.modules)")
    assert run(code) == "False"


def test_a_pydantic_v1_model_is_still_refused_once_v1_is_imported() -> None:
    code = (
        "import warnings\nwarnings.simplefilter('ignore')\n"
        "import functions.dependencies\n"  # installs the guard
        "from pydantic import v1\nfrom fastapi import APIRouter\n"
        "class Old(v1.BaseModel):\n    name: str\n"
        "router = APIRouter()\n"
        "try:\n"
        "    @router.post('/old')\n"
        "    def old(body: Old) -> None: ...\n"
        "    print('accepted')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert run(code) != "accepted"
