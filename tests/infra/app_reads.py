"""What each deployed app reads: the Settings fields its code names, and the %NAME% bindings of its functions.

An app is its entry script (PYTHON_SCRIPT_FILE_NAME) and every project module that script imports, directly or
lazily (an import inside a function counts: the code path exists), except modules the app provably never loads
(listed with the reason, and checked at run time by tests/infra/test_packages.py).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

from shared_code.settings import Settings
from tests.infra.bicep_model import REPO_ROOT

PROJECT_PACKAGES = ("functions", "shared_code")
# Modules on a lazy path the API app switches off in its settings: never imported there.
NEVER_LOADED = {
    "function_app.py": {
        "shared_code.retraining.azureml": "RETRAIN_LAUNCH=monitor: the API records, the monitor launches",
        "shared_code.retraining.local": "RETRAIN_LAUNCH=monitor (and RETRAIN_MODE=azureml in Azure)",
        "shared_code.monitoring.report": "DRIFT_REPORT=summary: no Evidently report is rendered in the API",
    },
    "monitor_app.py": {},
}
# Settings a module of the app names on a path its own settings switch off (checked by
# tests/unit/retraining/test_deferred_launch.py: the API's components never need them).
UNREACHED_SETTINGS = {
    "function_app.py": {
        name: "composition.azureml_config runs only for an Azure ML launcher; the API's is the DeferredLauncher"
        for name in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE", "AZUREML_COMPUTE",
                     "AZUREML_ENVIRONMENT", "AZUREML_CODE", "AZUREML_EXPERIMENT")
    },
    "monitor_app.py": {},
}
# Read by the Functions Python worker, not by the code.
WORKER_SETTINGS = frozenset({"PYTHON_SCRIPT_FILE_NAME"})
_ATTRIBUTE = re.compile(r"\.([A-Z][A-Z0-9_]+)\b")
_LITERAL = re.compile(r"""["']([A-Z][A-Z0-9_]+)["']""")
_BINDING = re.compile(r"%(\w+)%")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None when it is not a project module."""
    if name.split(".", maxsplit=1)[0] not in PROJECT_PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(tree: ast.Module) -> list[str]:
    """Every module an AST imports, `if TYPE_CHECKING:` blocks left out."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped |= {id(child) for child in ast.walk(node)}
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@cache
def import_closure(script: str) -> frozenset[Path]:
    """The entry script and every project module it can import, minus the ones the app never loads."""
    excluded = set(NEVER_LOADED.get(script, {}))
    seen: set[Path] = set()
    pending = [REPO_ROOT / script]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            target = module_file(name)
            if target is not None and name not in excluded and target not in seen:
                pending.append(target)
    return frozenset(seen)


def settings_read(files: frozenset[Path]) -> set[str]:
    """Settings fields the files name: `settings.NAME`, `self.NAME`, or a "NAME" literal (os.environ, getattr)."""
    fields = set(Settings.model_fields)
    found: set[str] = set()
    for path in files:
        source = path.read_text(encoding="utf-8")
        found |= set(_ATTRIBUTE.findall(source)) | set(_LITERAL.findall(source))
    return found & fields


@cache
def binding_settings(script: str) -> frozenset[str]:
    """%NAME% expressions in the function metadata the script's FunctionApp gives the host (as Azure indexes it)."""
    module = Path(script).with_suffix("").as_posix().replace("/", ".")
    code = (
        "import json, re, sys, importlib\n"
        f"app = importlib.import_module({module!r}).app\n"
        "names = set()\n"
        "for function in app.get_functions():\n"
        "    names |= set(re.findall(r'%(\\w+)%', function.get_function_json()))\n"
        "print(json.dumps(sorted(names)))\n"
    )
    env = {**os.environ, "AUTH_SIGNING_KEY": "x" * 40}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=180, check=False, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return frozenset(json.loads(result.stdout.strip().splitlines()[-1]))


def app_reads(script: str) -> set[str]:
    """Every setting an app reads: Settings fields its code names, and its binding expressions."""
    reached = settings_read(import_closure(script)) - set(UNREACHED_SETTINGS.get(script, {}))
    return reached | set(binding_settings(script))
