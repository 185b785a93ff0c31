"""Build the two deployment packages exactly as they deploy: `dist/api/` and `dist/monitor/`.

    python -m tools.package [--only api|monitor] [--out dist] [--reuse]

Each package is the tree filtered by `.funcignore` plus its own rules (`packaging/<name>.funcignore`), a
`requirements.txt` that is that app's full list (the monitor's flattened from requirements-monitor.txt), and its
dependencies installed for Linux x86-64, CPython 3.11 into `.python_packages/lib/site-packages` (the folder the
Python worker puts on sys.path), from PyPI wheels only. The last line printed is one JSON object,
`{"packages": {"api": MB, "monitor": MB}}`, each the package's installed size (MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(".python_packages") / "lib" / "site-packages"
# The Flex Consumption Python 3.11 image (Linux x86-64, glibc >= 2.28); pip's flags for that target.
TARGET_PYTHON = (3, 11)
PIP_TARGET = ("--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
              "--python-version", "{}.{}".format(*TARGET_PYTHON), "--implementation", "cp", "--only-binary=:all:")
STAMP = ".package-stamp.json"  # what the installed dependencies were built from (for --reuse)


# What the API never loads of OpenVINO, removed from its installed wheel (about 80 of its 178 MB): the GPU and NPU
# device plugins and the GPU kernel cache (a Functions instance has a CPU only), the frontends of other model
# formats (the service reads ONNX; the IR frontend stays for OpenVINO's own files) and the C++ headers. OpenVINO
# finds plugins and frontends by scanning its libs folder, so a removed one is simply not offered; the package
# test checks that the CPU plugin still compiles and runs a model from the pruned tree.
OPENVINO_UNUSED = (
    "openvino/libs/libopenvino_intel_gpu_plugin.so", "openvino/libs/libopenvino_intel_npu_plugin.so",
    "openvino/libs/cache.json", "openvino/libs/libopenvino_tensorflow_frontend.so*",
    "openvino/libs/libopenvino_tensorflow_lite_frontend.so*", "openvino/libs/libopenvino_paddle_frontend.so*",
    "openvino/libs/libopenvino_pytorch_frontend.so*", "openvino/libs/libopenvino_jax_frontend.so*",
    "openvino/libs/libopenvino_gguf_frontend.so*", "openvino/include",
)


@dataclass(frozen=True)
class PackageSpec:
    """One deployable app: its name, requirements file, the extra ignore rules of its package, and the installed
    files it removes again (globs under site-packages)."""

    name: str
    requirements: str
    rules: str
    pruned: tuple[str, ...] = ()
    bytecode: bool = False  # ship compiled modules (see compile_bytecode)

    def ignore_spec(self, root: Path = ROOT) -> pathspec.PathSpec[Any]:
        lines = [*read_rules(root / ".funcignore"), *read_rules(root / self.rules)]
        return pathspec.PathSpec.from_lines("gitwildmatch", lines)


PACKAGES = {
    "api": PackageSpec("api", "requirements.txt", "packaging/api.funcignore", pruned=OPENVINO_UNUSED, bytecode=True),
    # Timers only: a slower start is a few seconds per run, and bytecode for pandas, scipy, Evidently and the Azure
    # ML SDK would add 264 MB (966 -> 1229 MB, measured before the pruning) to the larger package.
    "monitor": PackageSpec("monitor", "requirements-monitor.txt", "packaging/monitor.funcignore",
                           pruned=OPENVINO_UNUSED),
}


def read_rules(path: Path) -> list[str]:
    """The patterns of a .funcignore-style file (gitignore syntax), comments and blanks dropped."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def shipped_files(spec: PackageSpec, root: Path = ROOT) -> list[Path]:
    """Files of the tree the package ships (relative paths), as Core Tools / azd apply .funcignore."""
    ignore = spec.ignore_spec(root)
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        relative_folder = Path(folder).relative_to(root)
        # prune ignored folders (and symlinked ones: .venv and friends are links to a shared checkout)
        dirs[:] = sorted(d for d in dirs if not (Path(folder) / d).is_symlink()
                         and not ignore.match_file(f"{(relative_folder / d).as_posix()}/"))
        for name in sorted(names):
            relative = relative_folder / name
            if not ignore.match_file(relative.as_posix()) and not (Path(folder) / name).is_symlink():
                files.append(relative)
    return files


def flattened_requirements(path: Path) -> list[str]:
    """Requirement lines of a file with its `-r other.txt` includes inlined (the package has one file)."""
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("-r "):
            lines.extend(flattened_requirements(path.parent / stripped[3:].strip()))
        elif stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def requirements_text(spec: PackageSpec, root: Path = ROOT) -> str:
    body = "\n".join(flattened_requirements(root / spec.requirements))
    return f"# Generated by `make package` from {spec.requirements}: what the {spec.name} app installs.\n{body}\n"


def tree_size(path: Path) -> int:
    """Bytes of every regular file under `path` (what the instance unpacks: the installed size)."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def megabytes(size: int) -> float:
    return round(size / 1_000_000, 1)


def _digest(requirements: str, pruned: Sequence[str] = ()) -> str:
    text = "\n".join(PIP_TARGET) + "\n" + requirements + "\n".join(pruned)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prune(site: Path, patterns: Sequence[str]) -> int:
    """Remove what `patterns` match under `site`; the bytes removed."""
    removed = 0
    for pattern in patterns:
        for match in sorted(site.glob(pattern)):
            if match.is_dir() and not match.is_symlink():
                removed += tree_size(match)
                shutil.rmtree(match)
            elif match.exists() or match.is_symlink():
                removed += match.stat().st_size if match.is_file() and not match.is_symlink() else 0
                match.unlink()
    return removed


def install_dependencies(requirements: Path, target: Path, *, pip: Sequence[str] | None = None) -> None:
    """Wheels for the Azure image only, into `target` (never this machine's platform)."""
    command = [*(pip or (sys.executable, "-m", "pip")), "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--target", str(target), *PIP_TARGET, "-r", str(requirements)]
    subprocess.run(command, check=True)


def build(spec: PackageSpec, out: Path, *, root: Path = ROOT, reuse: bool = False) -> Path:
    """Write `out/<name>/`; with `reuse`, keep installed dependencies built from the same requirements."""
    target = out / spec.name
    requirements = requirements_text(spec, root)
    stamp = target / SITE_PACKAGES / STAMP
    kept: Path | None = None
    if reuse and stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("digest") == _digest(
            requirements, spec.pruned):
        kept = out / f".{spec.name}-site-packages"
        shutil.rmtree(kept, ignore_errors=True)
        (target / SITE_PACKAGES).rename(kept)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for relative in shipped_files(spec, root):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target / relative)
    (target / "requirements.txt").write_text(requirements, encoding="utf-8")
    # azd and `func publish` zip this folder as it is: the files are already filtered (and the API's bytecode ships)
    (target / ".funcignore").write_text("# filtered by tools/package.py; its __pycache__ folders ship on purpose\n",
                                        encoding="utf-8")
    site = target / SITE_PACKAGES
    if kept is not None:
        site.parent.mkdir(parents=True, exist_ok=True)
        kept.rename(site)
    else:
        install_dependencies(target / "requirements.txt", site)
        removed = prune(site, spec.pruned)
        stamp = site / STAMP
        stamp.write_text(json.dumps({"digest": _digest(requirements, spec.pruned), "pruned_bytes": removed}) + "\n",
                         encoding="utf-8")
    if spec.bytecode:
        compile_bytecode(target)
    return target


def compile_bytecode(target: Path) -> None:
    """Bytecode for every module of the package, app and dependencies, valid whatever the files' times.

    The deployed package is mounted read-only, so a worker can never write `__pycache__`: without shipped
    bytecode it compiles every module it imports at every cold start (importing the API from its package took
    2.8 s so, 1.3 s with it: `docs/benchmark.md`). Unchecked-hash files are used without comparing the source's
    modification time, which a zip round trip does not keep exactly; the package is never edited in place.
    """
    if sys.version_info[:2] != TARGET_PYTHON:  # bytecode is per minor version: another one would never be used
        raise SystemExit(f"build the packages with Python {'.'.join(map(str, TARGET_PYTHON))}, the runtime's version")
    compileall.compile_dir(target, quiet=2, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.package", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(PACKAGES), action="append", help="build only this package")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--reuse", action="store_true", help="keep dependencies installed from the same pins")
    args = parser.parse_args(list(argv) if argv is not None else None)
    sizes = {}
    for name in args.only or sorted(PACKAGES):
        target = build(PACKAGES[name], args.out, reuse=args.reuse)
        sizes[name] = megabytes(tree_size(target))
        print(f"{name}: {target} {sizes[name]} MB", file=sys.stderr)
    print(json.dumps({"packages": sizes}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
