"""Checkov's Bicep scanner parses every file of infra/ and every check passes or is skipped inline with a reason.

Checkov pins many packages of its own, so it lives in .venv-checkov (`make .venv-checkov/.installed`, from
requirements-checkov.txt), never in the shared .venv; `make lint` runs it too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.infra.bicep_model import INFRA, REPO_ROOT, bicep_files

pytestmark = pytest.mark.unit

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
SKIP = re.compile(r"//\s*checkov:skip=(CKV_[A-Z0-9_]+)(:?)(.*)$")


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_inline_skip_names_a_check_and_gives_a_reason(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if "checkov:skip" in line:
            match = SKIP.search(line)
            assert match and match.group(2) == ":" and len(match.group(3).strip()) >= 20, line.strip()


def test_checkov_runs_from_its_own_environment() -> None:
    requirements = (REPO_ROOT / "requirements-checkov.txt").read_text(encoding="utf-8")
    assert re.search(r"^checkov==\d+\.\d+\.\d+$", requirements, re.MULTILINE)
    assert "checkov" not in (REPO_ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    makefiles = "\n".join(p.read_text(encoding="utf-8") for p in [REPO_ROOT / "Makefile", *REPO_ROOT.glob("mk/*.mk")])
    assert ".venv-checkov/.installed: requirements-checkov.txt" in makefiles
    lint = makefiles[makefiles.index("\nlint:"):]
    assert "checkov" in lint.split("\n.PHONY")[0]


@pytest.mark.slow
def test_checkov_parses_every_bicep_file_and_nothing_fails() -> None:
    if not CHECKOV.exists():
        pytest.skip("no .venv-checkov: run `make .venv-checkov/.installed` (make lint does)")
    result = subprocess.run([str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "--compact", "--quiet",
                             "--skip-download", "-o", "json"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600, check=False, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = next(r["summary"] for r in reports if r.get("check_type") == "bicep")
    failed = [f"{c['check_id']} {c['file_path']} {c['resource']}" for r in reports
              for c in r["results"].get("failed_checks", [])]
    assert summary["parsing_errors"] == 0, summary
    assert failed == [], failed
    assert summary["passed"] > 0
