"""End-to-end benchmark: the running local stack over HTTP vs the core pipeline in-process vs a naive baseline.

    make bench-e2e          (or: .venv/bin/python -m bench.e2e --int8 CARD --fp32 CARD --out bench/e2e.json)

One command, one run, one machine. It starts Azurite and the Cosmos server on free ports, then the project's
Functions host (devstack.host, the real function_app) per model, and measures:
  * cold start: host spawn -> first answered POST /api/classify (median of several spawns), plus a phase
    split from a probe process doing the same steps in order (bench/e2e_coldstart.py);
  * HTTP classify images/s and p50/p95/p99 latency at concurrency 1, 2, 4, interleaved round by round with
    the in-process pipeline on the same images, raw batch-1 inference of the served backend, the baseline
    server (FastAPI + PyTorch eager, bench/baseline_server.py in the model venv) and the competent peer
    (FastAPI + onnxruntime on the same ONNX file, no storage: bench/peer_ort_server.py), so the ratios
    compare blocks seconds apart; plus HTTP and pipeline at concurrency 1 on 12 MP JPEGs made at run time;
  * the blob path: N uploads through upload SAS URLs -> N results, images/s and upload-to-result lag;
  * peak RSS of the worker per model.
Every /api/classify also authenticates the caller and writes its result to Cosmos: that is part of HTTP.
Writes bench/e2e.json and bench/e2e.png from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.e2e_load import HttpTarget, blob_run, call_block, http_block, warm_up
from bench.e2e_stats import (
    CONCURRENCY,
    Series,
    check_shape,
    comparisons,
    headline,
    latency_summary,
    median,
    paired_ratios,
)
from bench.photos import twelve_mp_set

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL_PY = PROJECT_ROOT / "model" / ".venv" / "bin" / "python"
BENCH_USER = "bench-http"
BLOB_USER = "bench-blob"
SERVICE_USER = "bench-service"  # the in-process service's results (profile of an HTTP classify)


# --- inputs ---------------------------------------------------------------------------------------------
def photo_bytes(folder: Path | None, count: int = 250) -> tuple[list[bytes], str]:
    """The shared real JPEGs when present, otherwise synthetic 500x375 JPEGs of similar size."""
    if folder is not None and folder.is_dir():
        files = sorted(folder.glob("*.JPEG")) + sorted(folder.glob("*.jpg"))
        if files:
            return [f.read_bytes() for f in files[:count]], f"{len(files[:count])} real JPEGs from {folder}"
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(min(count, 64)):
        noise = rng.integers(0, 256, (375 // 8, 500 // 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).resize((500, 375), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos, f"{len(photos)} synthetic 500x375 JPEGs ({folder} not found)"


def machine_load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"load1": one, "load5": five, "load15": fifteen}


def peak_rss_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS (now) of a process, MiB."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmHWM", "VmRSS"):
                values["peak_rss_mb" if key == "VmHWM" else "rss_mb"] = int(line.split()[1]) / 1024.0
    return values


# --- the stack ------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (/proc/<pid>/stat); 0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by each process of the benchmark during measured blocks: where the machine's CPU went."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cpu: dict[str, float] = {name: 0.0 for name in [*pids, "bench_process"]}
        self.wall = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        own, started = time.process_time(), time.perf_counter()
        yield
        self.wall += time.perf_counter() - started
        self.cpu["bench_process"] += time.process_time() - own
        for name, pid in self.pids.items():
            self.cpu[name] += cpu_seconds(pid) - before[name]

    def cores(self) -> dict[str, float]:
        """Mean cores busy per process over the measured blocks (the machine has `os.cpu_count()`)."""
        return {name: round(seconds / self.wall, 3) for name, seconds in self.cpu.items()} if self.wall else {}


@dataclass
class Stack:
    """Emulators on free ports and the settings a host needs to use them."""

    workdir: Path
    values: dict[str, str]
    settings_path: Path
    processes: list[Any]

    def settings_for(self, model: Path) -> Path:
        path = self.workdir / f"local.settings.{model.parent.name}.json"
        path.write_text(json.dumps({"IsEncrypted": False, "Values": {**self.values, "MODEL_PATH": str(model)}}))
        return path

    def env(self, model: Path, package: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of a host or probe; with `package`, the app is imported from that deployment copy."""
        paths = (str(package) if package else "", str(PROJECT_ROOT), os.environ.get("PYTHONPATH", ""))
        env = {**os.environ, **self.values, "MODEL_PATH": str(model), "PYTHONPATH": os.pathsep.join(p for p in paths
                                                                                                  if p),
               **(extra or {})}
        if package is not None:
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # the package stays exactly as built
        return env


DEPLOYED = ("function_app.py", "host.json", "functions", "shared_code", "web")


PREWARM_CALL = "\nprewarm_model()\n"


# What `make package` ships for the API: unchecked-hash bytecode for the app (here; the dependencies come from the
# venv, whose bytecode is there already, as in the package). `source` is the same without it.
SHIPPED = "precompiled"


def deployment_package(workdir: Path, *, precompiled: bool = False, prewarm: bool = True) -> Path | None:
    """A copy of what .funcignore lets ship; `precompiled` adds unchecked-hash bytecode (valid after any copy).

    `prewarm=False` drops the model prewarm call from the copy's function_app.py (the before/after of that
    cold-start change); None when there is no such call to drop.
    """
    import compileall  # noqa: PLC0415
    import py_compile  # noqa: PLC0415

    target = workdir / f"package-{'precompiled' if precompiled else 'source'}{'' if prewarm else '-no-prewarm'}"
    for name in DEPLOYED:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if not prewarm:
        composition = target / "function_app.py"
        text = composition.read_text(encoding="utf-8")
        if PREWARM_CALL not in text:
            return None
        composition.write_text(text.replace(PREWARM_CALL, "\n"), encoding="utf-8")
    if precompiled:
        mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
        compileall.compile_dir(target, quiet=1, invalidation_mode=mode)
    return target


def start_cosmos_server(workdir: Path, *, keep_alive: bool) -> Any:
    """The Cosmos DB server; with keep_alive (devstack's default) it keeps connections open like Azure does."""
    from devstack.emulators import start_cosmos  # noqa: PLC0415

    return start_cosmos(workdir, keep_alive=keep_alive)


@contextlib.contextmanager
def emulators(workdir: Path, *, cosmos_keep_alive: bool = True) -> Iterator[Stack]:
    from devstack.emulators import ensure_node_modules, start_azurite  # noqa: PLC0415
    from devstack.processes import free_port  # noqa: PLC0415
    from devstack.stack import StackPorts, emulator_values, provision  # noqa: PLC0415

    ensure_node_modules()
    azurite = start_azurite(workdir)
    try:
        cosmos = start_cosmos_server(workdir, keep_alive=cosmos_keep_alive)
    except BaseException:
        azurite.stop()
        raise
    try:
        ports = StackPorts(blob=azurite.blob_port, queue=azurite.queue_port, table=azurite.table_port,
                           cosmos=cosmos.port, api=free_port())
        sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
        values = {str(k): str(v) for k, v in sample.items()}
        values.update(emulator_values(ports))
        values.update({
            "AUTH_SIGNING_KEY": secrets.token_urlsafe(48), "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
            # The limiter stays on the path (its cost is real) but never throttles the load generator.
            "RATE_LIMIT_PER_MINUTE": "6000000", "RATE_LIMIT_BURST": "100000",
        })
        provision(values, ports)
        yield Stack(workdir=workdir, values=values, settings_path=workdir / "local.settings.json",
                    processes=[azurite, cosmos])
    finally:
        cosmos.stop()
        azurite.stop()


def stack_settings(values: dict[str, str], **overrides: str) -> Any:
    """The app's Settings from the stack's values (as a host started on them would read them)."""
    from shared_code.settings import Settings  # noqa: PLC0415

    return Settings.model_validate({**{k: v for k, v in values.items() if k in Settings.model_fields}, **overrides})


def token_for(values: dict[str, str], user: str) -> str:
    from shared_code.identity.auth import issue_token  # noqa: PLC0415

    return issue_token(stack_settings(values), user, minutes=120)


def result_write_cost(service: Any, body: bytes, seconds: float) -> dict[str, float]:
    """One classify's result document written again and again (fresh ids): wall ms per write, and the CPU ms of
    this thread (the SDK's request building, signing, JSON and parsing); the rest is the Cosmos server's time."""
    from shared_code.results.blob_store import new_result_id  # noqa: PLC0415
    from shared_code.results.service import UploadedFile  # noqa: PLC0415

    document = service.classify_files(SERVICE_USER, [UploadedFile("b.jpg", body)], 5)[0]
    count, wall_started, cpu_started = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall_started < seconds:
        service.results.create(document.model_copy(update={"id": new_result_id()}))
        count += 1
    wall_ms = (time.perf_counter() - wall_started) * 1000.0 / count
    cpu_ms = (time.thread_time() - cpu_started) * 1000.0 / count
    return {"wall": wall_ms, "client_cpu": cpu_ms, "server_and_wait": wall_ms - cpu_ms, "writes": count}


def in_process_service(stack: Stack, model: Path) -> Any:
    """The host's ClassificationService built in this process from the same settings and emulators: its classify
    is the HTTP classify without the request (the pipeline uses this process's cached classifier)."""
    from shared_code.composition import Components  # noqa: PLC0415

    return Components(stack_settings(stack.values, MODEL_PATH=str(model))).service


@dataclass
class Host:
    process: Any
    port: int
    spawned_at: float
    port_open_s: float
    first_answer_s: float
    memory: dict[str, float] = field(default_factory=dict)


def start_host(stack: Stack, model: Path, image: bytes, token: str, *, blob_poll_s: float,
               package: Path | None = None, timeout: float = 90.0, extra_env: dict[str, str] | None = None) -> Host:
    """Spawn the Functions host and time it to its first answered POST /api/classify."""
    from devstack.processes import free_port, port_is_open, start_background  # noqa: PLC0415

    port = free_port()
    command = [sys.executable, "-m", "devstack.host", "function_app:app", "--port", str(port),
               "--settings", str(stack.settings_for(model)), "--host-json", str(PROJECT_ROOT / "host.json"),
               "--blob-poll-seconds", str(blob_poll_s), "--event-grid-poll-seconds", str(blob_poll_s),
               "--host-id", f"bench-e2e-{port}"]
    spawned = time.perf_counter()
    process = start_background("host", command, log_path=stack.workdir / f"host-{port}.log",
                               cwd=package or PROJECT_ROOT, env=stack.env(model, package, extra_env))
    port_open = 0.0
    target = HttpTarget(port, "/api/classify", {"Authorization": f"Bearer {token}"})
    deadline = spawned + timeout
    while time.perf_counter() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"the host exited ({process.process.returncode}):\n{process.log_tail()}")
        if not port_open:
            if port_is_open(port, timeout=0.05):
                port_open = time.perf_counter() - spawned
            else:
                time.sleep(0.005)
                continue
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = target.connect()
            try:
                status, body = target.post(connection, image)
            finally:
                connection.close()
            if status == 200:
                return Host(process, port, spawned, port_open, time.perf_counter() - spawned)
            process.stop()
            raise RuntimeError(f"first classify answered {status}: {body[:400]!r}\n{process.log_tail()}")
    process.stop()
    raise RuntimeError(f"the host did not answer within {timeout} s:\n{process.log_tail()}")


def coldstart_process(stack: Stack, model: Path, package: Path, *options: str) -> tuple[int, dict[str, Any]]:
    """Run bench/e2e_coldstart.py in the package with `options`: its exit code and the JSON line it printed."""
    completed = subprocess.run([sys.executable, "-m", "bench.e2e_coldstart", *options], cwd=package,
                               env=stack.env(model, package), capture_output=True, text=True, timeout=120, check=False)
    lines = completed.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"cold-start probe failed ({completed.returncode}): {completed.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    return completed.returncode, report


def probe(stack: Stack, model: Path, image_path: Path, package: Path) -> dict[str, Any]:
    """One cold-start probe process (phase split and the heavy-import guard)."""
    spawned = time.time()
    exit_code, report = coldstart_process(stack, model, package, "--image", str(image_path),
                                          "--spawned-at", str(spawned))
    report["exit_code"] = exit_code
    report["wall_s"] = time.time() - spawned
    return report


BLOB_MODEL_NAME = "bench-served"


def publish_served_model(stack: Stack, model: Path) -> None:
    """The served model's version folder uploaded to the stack's models container and promoted (as model.train does)."""
    from shared_code.composition import Components  # noqa: PLC0415
    from shared_code.inference.model_repository import BlobModelRepository  # noqa: PLC0415

    settings = stack_settings(stack.values)
    repository = BlobModelRepository(Components(settings).blobs.service, settings.MODELS_CONTAINER,
                                     stack.workdir / "publisher-cache")
    repository.publish(BLOB_MODEL_NAME, model.parent.name, model.parent, promote=True)


def blob_model_cold_starts(stack: Stack, model: Path, image: bytes, token: str, runs: int, blob_poll_s: float,
                           packages: dict[str, Path]) -> dict[str, Any]:
    """Host spawn -> first answer with MODEL_SOURCE=blob and an empty model cache, per package, spawns alternating."""
    times: dict[str, list[float]] = {kind: [] for kind in packages}
    for run in range(runs):
        for kind in (list(packages) if run % 2 == 0 else list(packages)[::-1]):
            extra = {"MODEL_SOURCE": "blob", "MODEL_NAME": BLOB_MODEL_NAME,
                     "MODEL_CACHE_DIR": tempfile.mkdtemp(prefix="model-cache-", dir=stack.workdir)}
            host = start_host(stack, model, image, token, blob_poll_s=blob_poll_s, package=packages[kind],
                              extra_env=extra)
            host.process.stop()
            times[kind].append(host.first_answer_s)
    result: dict[str, Any] = {kind: {"host_first_answer_s": median(values), "host_runs_s": values}
                              for kind, values in times.items()}
    if "prewarm" in times and "no_prewarm" in times:
        result["prewarm_over_no_prewarm"] = median(a / b for a, b in zip(times["prewarm"], times["no_prewarm"],
                                                                         strict=True))
    return result


def import_steps(stack: Stack, model: Path, image_path: Path, package: Path) -> dict[str, float]:
    """One import-only probe process (bench/e2e_coldstart.py --import-profile): seconds per library, then the app."""
    exit_code, report = coldstart_process(stack, model, package, "--image", str(image_path), "--import-profile")
    if exit_code != 0:
        raise RuntimeError(f"import profile failed ({exit_code}): {report}")
    steps: dict[str, float] = report["import_steps_s"]
    return steps


@contextlib.contextmanager
def peer_ort_server(workdir: Path, model: Path) -> Iterator[int]:
    """The FastAPI + onnxruntime peer (app venv) serving the same ONNX file."""
    from devstack.processes import free_port, start_background  # noqa: PLC0415
    from shared_code.inference.model_card import load_card  # noqa: PLC0415

    card, onnx_path = load_card(model)
    port = free_port()
    process = start_background("peer-ort", [sys.executable, "-m", "bench.peer_ort_server", "--port", str(port),
                                            "--model", str(onnx_path), "--resize", str(card.resize_size),
                                            "--crop", str(card.crop_size)],
                               log_path=workdir / "peer-ort.log", cwd=PROJECT_ROOT,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        process.wait_for_ports([port], timeout=120)
        yield port
    finally:
        process.stop()


@contextlib.contextmanager
def baseline_server(workdir: Path, arch: str) -> Iterator[int | None]:
    """The FastAPI + PyTorch eager server in the model venv, or None when that venv is missing."""
    if not MODEL_PY.exists():
        yield None
        return
    from devstack.processes import free_port, start_background  # noqa: PLC0415

    port = free_port()
    process = start_background("baseline", [str(MODEL_PY), "-m", "bench.baseline_server", "--port", str(port),
                                            "--arch", arch],
                               log_path=workdir / "baseline.log", cwd=PROJECT_ROOT,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        process.wait_for_ports([port], timeout=180)
        yield port
    finally:
        process.stop()


# --- measurements ---------------------------------------------------------------------------------------
def cold_starts(stack: Stack, model: Path, image: bytes, image_path: Path, token: str, runs: int,
                blob_poll_s: float, packages: dict[str, Path], blob_packages: dict[str, Path] | None = None
                ) -> dict[str, Any]:
    """Per deployment package: `runs` host spawns and as many probes, nothing else running; medians."""
    result: dict[str, Any] = {}
    for kind, package in packages.items():
        hosts: list[Host] = []
        for _ in range(runs):
            host = start_host(stack, model, image, token, blob_poll_s=blob_poll_s, package=package)
            host.memory = peak_rss_mb(host.process.pid)
            host.process.stop()
            hosts.append(host)
        probes = [probe(stack, model, image_path, package) for _ in range(runs)]
        result[kind] = {
            "host_first_answer_s": median(h.first_answer_s for h in hosts),
            "host_first_answer_min_s": min(h.first_answer_s for h in hosts),  # noise only ever adds
            "host_port_open_s": median(h.port_open_s for h in hosts),
            "host_runs_s": [h.first_answer_s for h in hosts],
            "host_peak_rss_mb_at_first_answer": median(h.memory.get("peak_rss_mb", 0.0) for h in hosts),
            "probe_total_s": median(p["total_s"] for p in probes),
            "probe_phases_s": {name: median(p["phases_s"][name] for p in probes) for name in probes[0]["phases_s"]},
            "probe_second_http_s": median(p.get("second_http_s", 0.0) for p in probes),
            "probe_peak_rss_mb": median(p["peak_rss_mb"] or 0.0 for p in probes),
            "forbidden_modules_loaded": sorted({m for p in probes for m in p["forbidden_modules_loaded"]}),
            "probe_exit_codes": [p["exit_code"] for p in probes],
            "first_http_status": [p.get("first_http_status") for p in probes],
        }
    # As Azure runs it (MODEL_SOURCE=blob, infra/main.bicep): the promoted version is downloaded into an empty cache
    # on every spawn, like a fresh instance, with and without the prewarm, spawns alternating.
    if blob_packages:
        result["blob_model"] = blob_model_cold_starts(stack, model, image, token, runs, blob_poll_s, blob_packages)
    # Where the shipped package's imports phase goes, library by library (medians of 3 import-only processes).
    steps = [import_steps(stack, model, image_path, packages[SHIPPED]) for _ in range(3)]
    result[SHIPPED]["import_profile_s"] = {name: median(s[name] for s in steps) for name in steps[0]}
    # The headline figure is the package as it ships (tools/package.py compiles the API package's bytecode).
    result["host_first_answer_s"] = result[SHIPPED]["host_first_answer_s"]
    return result


@dataclass
class Extras:
    """What is measured beside our HTTP and pipeline in every round (absent parts are skipped)."""

    baseline: HttpTarget | None = None
    peer: HttpTarget | None = None
    raw_work: Any = None  # raw batch-1 inference of the served backend (in-process)
    big_bodies: Sequence[bytes] = ()  # 12 MP JPEGs: our HTTP and pipeline at concurrency 1
    cpu_c4: CpuMeter | None = None  # where the CPU goes during our HTTP blocks at concurrency 4
    profile_http: bool = False  # measure the parts of an HTTP classify (service in-process, fixed request cost)
    service_work: Any = None  # the service's own classify in-process (pipeline + result write), c=1
    http_fixed: HttpTarget | None = None  # an authenticated request without an image (GET /api/me), c=1


def interleaved(bodies: Sequence[bytes], seconds: float, rounds: int, http: HttpTarget,
                pipeline_work: Any, baseline: HttpTarget | None, extras: Extras | None = None
                ) -> dict[str, dict[str, Series]]:
    """Round by round: pipeline and raw (c=1), then HTTP, baseline and peer at each concurrency; `seconds` blocks."""
    extras = extras or Extras(baseline=baseline)
    extras.baseline = extras.baseline or baseline
    remote = {name: target for name, target in (("baseline", extras.baseline), ("peer_ort", extras.peer)) if target}
    series: dict[str, dict[str, Series]] = {"pipeline": {"c1": Series()}, "http": {}, "baseline": {}, "peer_ort": {},
                                            "raw": {}, "pipeline_12mp": {}, "http_12mp": {}}
    for concurrency in CONCURRENCY:
        series["http"][f"c{concurrency}"] = Series()
        for name in remote:
            series[name][f"c{concurrency}"] = Series()
    if extras.raw_work is not None:
        series["raw"]["c1"] = Series()
    if extras.service_work is not None:
        series["service"] = {"c1": Series()}
    if extras.http_fixed is not None:
        series["http_fixed"] = {"c1": Series()}
    if extras.big_bodies:
        series["pipeline_12mp"]["c1"], series["http_12mp"]["c1"] = Series(), Series()
    offset = 0
    for round_index in range(rounds):
        for concurrency in CONCURRENCY:
            key = f"c{concurrency}"
            if concurrency == 1:
                series["pipeline"][key].add(call_block(pipeline_work, bodies, seconds, offset))
                if extras.raw_work is not None:
                    series["raw"][key].add(call_block(extras.raw_work, bodies, seconds, offset))
                if extras.service_work is not None:
                    series["service"][key].add(call_block(extras.service_work, bodies, seconds, offset))
                if extras.http_fixed is not None:
                    series["http_fixed"][key].add(http_block(extras.http_fixed, bodies, 1, seconds, offset))
            with extras.cpu_c4.measure() if extras.cpu_c4 and concurrency == 4 else contextlib.nullcontext():
                series["http"][key].add(http_block(http, bodies, concurrency, seconds, offset))
            for name, target in remote.items():
                series[name][key].add(http_block(target, bodies, concurrency, seconds, offset))
            offset += 37
        if extras.big_bodies:
            series["pipeline_12mp"]["c1"].add(call_block(pipeline_work, extras.big_bodies, seconds, round_index))
            series["http_12mp"]["c1"].add(http_block(http, extras.big_bodies, 1, seconds, round_index))
        print(f"  round {round_index + 1}/{rounds} done (load {os.getloadavg()[0]:.2f})", flush=True)
    return series


def summarise(series: dict[str, dict[str, Series]]) -> dict[str, Any]:
    return {target: {key: s.summary() for key, s in by_c.items()} for target, by_c in series.items() if by_c}


def measure_model(stack: Stack, model: Path, bodies: list[bytes], args: argparse.Namespace,
                  baseline: HttpTarget | None, rounds: int, blob: bool, extras: Extras | None = None
                  ) -> dict[str, Any]:
    """Throughput and latency of one model's host, interleaved with the pipeline (baseline, peer, raw)."""
    import numpy as np  # noqa: PLC0415

    from shared_code.inference.classifier import load_classifier  # noqa: PLC0415
    from shared_code.inference.pipeline import ClassificationPipeline  # noqa: PLC0415

    extras = extras or Extras()
    token = token_for(stack.values, BENCH_USER)
    host = start_host(stack, model, bodies[0], token, blob_poll_s=args.blob_poll_seconds)
    try:
        target = HttpTarget(host.port, "/api/classify?top_k=5", {"Authorization": f"Bearer {token}"})
        warm_up(target, bodies, 6)
        # The same backend setting as the host (local.settings.sample.json: auto), so the ratios compare like with like.
        classifier = load_classifier(model, backend=stack.values.get("INFERENCE_BACKEND", "auto"))
        classifier.wait_ready(180)
        figures_backend = wait_for_backend(host.port, classifier.backend_label)
        pipeline = ClassificationPipeline(classifier)
        for body in bodies[:6]:
            pipeline.classify_bytes(body)
        height, width = classifier.card.input_size
        tensor = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
        if extras.raw_work is None:
            extras.raw_work = lambda _body: classifier.backend.infer(tensor)
        extras.raw_work(b"")
        for remote in (baseline, extras.peer):
            if remote is not None:
                warm_up(remote, bodies, 4)
        if extras.profile_http:
            from shared_code.results.service import UploadedFile  # noqa: PLC0415

            service = in_process_service(stack, model)
            extras.service_work = lambda body: service.classify_files(SERVICE_USER, [UploadedFile("b.jpg", body)], 5)
            extras.http_fixed = HttpTarget(host.port, "/api/me", target.headers, method="GET")
            warm_up(extras.http_fixed, bodies, 2)
            for body in bodies[:4]:
                extras.service_work(body)
        print(f"{model}: {rounds} interleaved rounds of {args.seconds:g} s blocks on {classifier.backend_label}",
              flush=True)
        extras.cpu_c4 = CpuMeter({"host": host.process.pid,
                                  **{process.name: process.pid for process in stack.processes}})
        series = interleaved(bodies, args.seconds, rounds, target, lambda b: pipeline.classify_bytes(b, 5), baseline,
                             extras)
        figures = summarise(series)
        if extras.profile_http:
            figures["result_write_ms"] = result_write_cost(service, bodies[0], min(args.seconds, 3.0))
        # Cores busy per process while our HTTP ran at c=4 (the load generator is in bench_process): in Azure the
        # Cosmos and Storage emulators and the client run elsewhere; here they share the host's cores.
        figures["http_c4_cores_by_process"] = extras.cpu_c4.cores()
        figures["backend"] = classifier.backend_label
        figures["host_backend"] = figures_backend
        figures["http_over_pipeline_rounds"] = paired_ratios(series["pipeline"]["c1"], series["http"]["c1"])
        figures["memory"] = {"after_load": peak_rss_mb(host.process.pid)}
        if blob:
            print(f"{model}: blob path, {args.blob_n} uploads", flush=True)
            blob_headers = {"Authorization": f"Bearer {token_for(stack.values, BLOB_USER)}"}
            figures["blob"] = blob_figures(blob_run(host.port, blob_headers, bodies, args.blob_n),
                                           args.blob_poll_seconds)
            figures["memory"]["after_blob"] = peak_rss_mb(host.process.pid)
    finally:
        host.process.stop()
    return figures


def wait_for_backend(port: int, expected: str, timeout: float = 180.0) -> str:
    """Poll /api/health until the host serves on `expected` (a quick start switches engines after compiling)."""
    from bench.e2e_load import request_json  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    backend = ""
    while time.monotonic() < deadline:
        status, body = request_json(port, "GET", "/api/health", {})
        backend = str(((body or {}).get("model") or {}).get("backend") or "") if status == 200 else ""
        if backend == expected:
            break
        time.sleep(0.25)
    return backend


def blob_figures(run: dict[str, Any], poll_s: float) -> dict[str, Any]:
    lags = run.pop("lags_s")
    figures = {**run, "poll_interval_s": poll_s}
    if lags:
        summary = latency_summary(lags)
        figures.update({"lag_p50_s": summary["p50_ms"] / 1000.0, "lag_p95_s": summary["p95_ms"] / 1000.0,
                        "lag_p99_s": summary["p99_ms"] / 1000.0, "lag_max_s": summary["max_ms"] / 1000.0})
    return figures


# --- output ---------------------------------------------------------------------------------------------
def chart(result: dict[str, Any], target: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (rates, latency) = plt.subplots(1, 2, figsize=(12, 4.2))
    groups: list[tuple[str, dict[str, Any]]] = []
    for name, figures in result["models"].items():
        groups.append((f"HTTP {name}", figures["http"]))
    groups.append(("baseline (FastAPI+torch)", result.get("baseline") or {}))
    groups.append(("peer (FastAPI+onnxruntime)", result.get("peer_ort") or {}))
    width = 0.8 / (len(groups) + 1)
    for index, concurrency in enumerate(CONCURRENCY):
        key = f"c{concurrency}"
        for g, (label, by_c) in enumerate(groups):
            if key in by_c:
                rates.bar(index + g * width, by_c[key]["img_s"], width, color=f"C{g}",
                          label=label if index == 0 else None)
                latency.bar(index + g * width, by_c[key]["p99_ms"], width, color=f"C{g}",
                            label=label if index == 0 else None)
                latency.bar(index + g * width, by_c[key]["p50_ms"], width * 0.5, color="k", alpha=0.35)
    served = result["models"][result["served_model"]]["pipeline"]["c1"]["img_s"]
    rates.axhline(served, color="k", linestyle="--", linewidth=1,
                  label=f"pipeline in-process ({result['served_model']})")
    for axis, title in ((rates, "images / s (higher is better)"), (latency, "p99 latency ms (dark: p50)")):
        axis.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(CONCURRENCY))],
                        [f"concurrency {c}" for c in CONCURRENCY])
        axis.set_title(title)
        axis.legend(fontsize=8)
    figure.suptitle(f"{result['model_family']} end to end on {result['machine']['cores']} cores: "
                    f"HTTP/pipeline {result['http_over_pipeline']:.2f}x, cold start {result['cold_start_s']:.2f} s, "
                    f"load {result['machine']['load_before']['load1']:.1f}", fontsize=10)
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", type=Path, required=True, help="card of the served (int8) network")
    parser.add_argument("--fp32", type=Path, help="card of the same network in fp32 (measured beside it)")
    parser.add_argument("--photos", type=Path, default=PROJECT_ROOT.parent / "shared" / "imagenet-sample")
    parser.add_argument("--arch", default="resnet50", help="torchvision architecture of the baseline server")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one timed block")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds for the served model")
    parser.add_argument("--fp32-rounds", type=int, default=2)
    parser.add_argument("--cold-runs", type=int, default=5, help="host spawns per package (the median is reported)")
    parser.add_argument("--blob-n", type=int, default=100)
    parser.add_argument("--blob-poll-seconds", type=float, default=1.0, help="the host's blob polling interval")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip the FastAPI + onnxruntime peer")
    parser.add_argument("--big-n", type=int, default=8, help="12 MP JPEGs made from the photos (0: none)")
    parser.add_argument("--cosmos-close", action="store_true",
                        help="run the Cosmos server as devstack does (Connection: close on every answer)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "e2e.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    bodies, photos = photo_bytes(args.photos)
    from shared_code.inference.classifier import available_cores, load_classifier  # noqa: PLC0415

    card = load_classifier(args.int8).card
    result: dict[str, Any] = {
        "model_family": f"{card.architecture} (weights {card.weights})", "served_model": "int8",
        "photos": photos, "transport": "raw image/jpeg bodies over keep-alive HTTP/1.1, closed-loop clients",
        "machine": {"cores": available_cores(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_before": machine_load()},
        "settings": {"block_seconds": args.seconds, "rounds": args.rounds, "fp32_rounds": args.fp32_rounds,
                     "cold_runs": args.cold_runs, "blob_uploads": args.blob_n,
                     "blob_poll_seconds": args.blob_poll_seconds, "cosmos_keep_alive": not args.cosmos_close,
                     "notes": "every /api/classify authenticates (JWT), applies the rate limiter (set high) and "
                              "writes its result to Cosmos (local emulator): that cost is part of HTTP"},
        "models": {},
    }
    models = {"int8": args.int8.resolve(), **({"fp32": args.fp32.resolve()} if args.fp32 else {})}
    # The local Cosmos server's certificate is self-signed by design (as in devstack.host).
    warnings.filterwarnings("ignore", message=r"Unverified HTTPS request is being made to host '127\.0\.0\.1'")
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir=os.environ.get("TMPDIR")))
    image_path = workdir / "probe.jpg"
    image_path.write_bytes(bodies[0])
    with emulators(workdir, cosmos_keep_alive=not args.cosmos_close) as stack:
        print(f"emulators up in {time.perf_counter() - started:.1f} s ({workdir})", flush=True)
        token = token_for(stack.values, BENCH_USER)
        # Cold starts first, with nothing else running (the baseline server starts after them).
        built = {"source": deployment_package(workdir), "precompiled": deployment_package(workdir, precompiled=True),
                 "source_no_prewarm": deployment_package(workdir, prewarm=False)}
        packages = {kind: path for kind, path in built.items() if path is not None}
        publish_served_model(stack, models["int8"])
        shipped_no_prewarm = deployment_package(workdir, precompiled=True, prewarm=False)
        blob_packages = {"prewarm": packages[SHIPPED],
                         **({"no_prewarm": shipped_no_prewarm} if shipped_no_prewarm else {})}
        colds = {}
        for name, model in models.items():
            print(f"{name}: cold start x{args.cold_runs}", flush=True)
            colds[name] = cold_starts(stack, model, bodies[0], image_path, token, args.cold_runs,
                                      args.blob_poll_seconds, packages if name == "int8" else
                                      {SHIPPED: packages[SHIPPED]}, blob_packages if name == "int8" else None)
        with contextlib.ExitStack() as servers:
            baseline_port = None if args.no_baseline else servers.enter_context(baseline_server(workdir, args.arch))
            peer_port = None if args.no_peer else servers.enter_context(peer_ort_server(workdir, models["int8"]))
            big = twelve_mp_set(bodies, args.big_n) if args.big_n else []
            for name, model in models.items():
                baseline = HttpTarget(baseline_port, "/classify", {}) if baseline_port and name == "int8" else None
                extras = Extras(peer=HttpTarget(peer_port, "/classify", {}) if peer_port and name == "int8" else None,
                                big_bodies=big if name == "int8" else (), profile_http=name == "int8")
                rounds = args.rounds if name == "int8" else args.fp32_rounds
                figures = measure_model(stack, model, bodies, args, baseline, rounds, blob=name == "int8",
                                        extras=extras)
                figures["cold_start"] = colds[name]
                if baseline is not None:
                    result["baseline"] = figures.pop("baseline")
                if extras.peer is not None:
                    result["peer_ort"] = figures.pop("peer_ort")
                result["models"][name] = figures
    result.update(headline(result["models"], "int8", result.get("baseline") or {"c1": {"img_s": float("nan")}},
                           result["models"]["int8"]["cold_start"]))
    if "fp32" in result["models"]:
        fp32 = result["models"]["fp32"]
        result["fp32_http_over_pipeline"] = fp32["pipeline"]["c1"]["img_s"] / fp32["http"]["c1"]["img_s"]
        result["fp32_cold_start_s"] = fp32["cold_start"]["host_first_answer_s"]
    result["cold_start_precompiled_s"] = result["models"]["int8"]["cold_start"]["precompiled"]["host_first_answer_s"]
    result["cold_start_source_s"] = result["models"]["int8"]["cold_start"]["source"]["host_first_answer_s"]
    result["cold_start_phases_s"] = result["models"]["int8"]["cold_start"][SHIPPED]["probe_phases_s"]
    result["cold_start_import_profile_s"] = result["models"]["int8"]["cold_start"][SHIPPED].get("import_profile_s")
    blob_model = result["models"]["int8"]["cold_start"].get("blob_model") or {}
    result["cold_start_blob_model_s"] = (blob_model.get("prewarm") or {}).get("host_first_answer_s")
    result["cold_start_blob_model_no_prewarm_s"] = (blob_model.get("no_prewarm") or {}).get("host_first_answer_s")
    if "source_no_prewarm" in result["models"]["int8"]["cold_start"]:
        result["cold_start_no_prewarm_s"] = result["models"]["int8"]["cold_start"]["source_no_prewarm"][
            "host_first_answer_s"]
    result["forbidden_modules_loaded"] = sorted({m for f in result["models"].values()
                                                 for kind in ("source", "precompiled", "source_no_prewarm")
                                                 if kind in f["cold_start"]
                                                 for m in f["cold_start"][kind]["forbidden_modules_loaded"]})
    result.update(comparisons(result["models"]["int8"], result.get("peer_ort")))
    if big:
        result["photos_12mp"] = f"{len(big)} JPEGs 4000x3000 q90 upscaled from the shared photos, made at run time"
    if result.get("baseline"):
        result["http_over_baseline"] = {key: result["models"]["int8"]["http"][key]["img_s"] / value["img_s"]
                                        for key, value in result["baseline"].items()}
    result["peak_rss_mb"] = {name: f["memory"]["after_load"].get("peak_rss_mb") for name, f in result["models"].items()}
    blob = result["models"]["int8"].get("blob") or {}
    result["blob_img_s"], result["blob_lag_p50_s"], result["blob_lag_p99_s"] = (
        blob.get("img_s"), blob.get("lag_p50_s"), blob.get("lag_p99_s"))
    result["machine"]["load_after"] = machine_load()
    result["elapsed_s"] = time.perf_counter() - started
    problems = check_shape(result)
    if result["forbidden_modules_loaded"]:
        problems.append(f"the classify path imported {result['forbidden_modules_loaded']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    chart(result, args.out.with_suffix(".png"))
    print(json.dumps({key: (round(value, 3) if isinstance(value, float) else value)
                      for key, value in result.items() if not isinstance(value, dict)}))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:  # logs and emulator data are kept for a failed run only
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
