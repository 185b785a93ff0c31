"""The training code as an Azure ML code asset: staged folder and content version, for the azd hooks.

    python -m tools.code_asset version            # prints the content version (also what Bicep names)
    python -m tools.code_asset stage DIR          # stages model/ + shared_code/ sources into DIR

The version is a hash of the staged files, so the preprovision hook can hand it to Bicep (the monitor app's
AZUREML_CODE = azureml:<name>:<version>) before the postprovision hook registers that very content with
`az ml code create` (a name and version are immutable in Azure ML: the same content registers once).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shared_code.retraining.azureml import stage_code

ASSET_NAME = "imgclass-training"


def content_version(folder: Path) -> str:
    """12 hex digits of the SHA-256 over every staged file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def asset_reference(version: str) -> str:
    """The AZUREML_CODE value of a registered version."""
    return f"azureml:{ASSET_NAME}:{version}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.code_asset", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the content version of the training code")
    stage = sub.add_parser("stage", help="stage the training code into a folder")
    stage.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "stage":
        stage_code(args.folder)
        print(content_version(args.folder))
        return 0
    with tempfile.TemporaryDirectory() as work:
        folder = stage_code(Path(work) / "code")
        print(content_version(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
