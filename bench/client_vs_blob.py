"""`make bench-client`: the CLI's folder upload against the blob path, on one local stack, in one run.

1. A 1,000-photo folder is generated at run time from ../shared/imagenet-sample (each photo in a few
   distinct variants: resized, mirrored, cropped, rotated), so nothing large is committed.
2. `devstack.stack up` on free ports in a scratch root, serving MODEL (default: the exported model, else
   ../shared/models/mobilenetv2-12-int8.onnx), with the app's default limits.
3. Blob path: the same 1,000 photos PUT straight to their SAS URLs (granted beforehand, untimed), 8 at a
   time; img/s = photos / (first PUT -> the last result's `updated_at`). That is the blob trigger's own
   throughput, the ceiling of any client. It runs before and after the CLI (mean of both).
4. CLI: `python -m imgclass_client upload <folder>` with default settings, as a user runs it; img/s =
   photos / the process's wall time (start-up, grants, PUTs and waiting for every result included).

The last line is `{"cli_img_s", "blob_img_s", "cli_over_blob"}`; the lines before it say the machine
(nproc, CPU flags, load) and the details. Target: cli_over_blob >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from PIL import Image, ImageOps

from devstack.emulators import connection_string
from devstack.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PHOTOS = SHARED / "imagenet-sample"
DEFAULT_MODELS = (ROOT / "model" / "artifacts" / "current.card.json", SHARED / "models" / "mobilenetv2-12-int8.onnx")
SIGNING_KEY = "bench-client-signing-key-0123456789abcdefghij"


def machine() -> dict[str, Any]:
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"nproc": os.cpu_count(), "avx2": "avx2" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "amx": any(flag.startswith("amx") for flag in flags), "load": list(os.getloadavg())}


def make_folder(folder: Path, count: int) -> list[Path]:
    """`count` distinct JPEGs from the shared photos: variants of each until there are enough."""
    sources = sorted(PHOTOS.glob("*.JPEG"))
    if not sources:
        raise SystemExit(f"{PHOTOS} has no photos: the benchmark needs ../shared/imagenet-sample")
    variants = [lambda im: im, ImageOps.mirror, lambda im: ImageOps.crop(im, border=im.width // 10),
                lambda im: im.rotate(90, expand=True), ImageOps.flip, ImageOps.grayscale]
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index in range(count):
        source = sources[index % len(sources)]
        variant = variants[(index // len(sources)) % len(variants)]
        with Image.open(source) as image:
            picture = variant(image.convert("RGB"))
            picture.thumbnail((400, 400))
            path = folder / f"{index:04d}_{source.stem}.jpg"
            picture.convert("RGB").save(path, format="JPEG", quality=85)
        paths.append(path)
    return paths


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "imgclass-local", "aud": "imgclass-api", "sub": user, "iat": now, "nbf": now,
                       "exp": now + 3600, "scope": "classify results:read results:write"},
                      SIGNING_KEY, algorithm="HS256")


def stack(root: Path, ports: dict[str, int], *arguments: str) -> subprocess.CompletedProcess[str]:
    options = [option for name, port in ports.items() for option in (f"--{name}-port", str(port))]
    return subprocess.run([sys.executable, "-m", "devstack.stack", *arguments, "--root", str(root), *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def wait_final(http: httpx.Client, headers: dict[str, str], ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Every result, once none is pending: the oldest 500 pending ids once a second, as the CLI polls.

    The blob path's time is taken from the results' own `updated_at`, so the polling is not on its clock;
    it polls like the CLI so that both put the same load on the host.
    """
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    while len(final) < len(ids) and time.monotonic() < deadline:
        pending = [i for i in ids if i not in final][:500]
        body = http.post("results/query", headers=headers, json={"ids": pending}).json()
        final.update({item["id"]: item for item in body["items"] if item["status"] != "pending"})
        if len(final) < len(ids):
            time.sleep(1.0)
    return list(final.values())


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def blob_path(http: httpx.Client, files: list[Path], user: str, timeout: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token(user)}"}
    grants: list[dict[str, Any]] = []
    for start in range(0, len(files), 250):  # granted before the clock starts: only PUT -> result is timed
        response = http.post("uploads/batch", headers=headers, json={"files": [
            {"filename": path.name, "idempotency_key": f"{user}-{start + i}"}
            for i, path in enumerate(files[start:start + 250])]})
        response.raise_for_status()
        grants += response.json()["items"]
    bodies = [path.read_bytes() for path in files]
    local = threading.local()

    def put(index: int) -> int:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=60)
        return int(local.http.put(grants[index]["upload_url"], content=bodies[index],
                                  headers={"x-ms-blob-type": "BlockBlob"}).status_code)

    started = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(put, range(len(files))))
    uploaded_s = time.time() - started
    results = wait_final(http, headers, [grant["id"] for grant in grants], timeout)
    finished = max((epoch(item["updated_at"]) for item in results), default=time.time())
    seconds = finished - started
    return {"photos": len(files), "put_failures": sum(status != 201 for status in statuses),
            "final": len(results), "done": sum(item["status"] == "done" for item in results),
            "uploads_s": round(uploaded_s, 2), "seconds": round(seconds, 2),
            "img_s": round(sum(item["status"] == "done" for item in results) / seconds, 2) if results else 0.0}


def cli_path(api: str, folder: Path, user: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMGCLASS_API_KEY", None)
    env["IMGCLASS_TOKEN"] = token(user)  # default settings otherwise: concurrency, poll interval, timeout
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "imgclass_client", "upload", str(folder), "--api", api,
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    seconds = time.time() - started
    rows = out.read_text(encoding="utf-8").splitlines()[1:] if out.exists() else []
    photos = len(list(folder.glob("*.jpg")))
    return {"photos": photos, "exit": done.returncode, "rows": len(rows),
            "done": sum(",done," in row for row in rows), "seconds": round(seconds, 2),
            "img_s": round(sum(",done," in row for row in rows) / seconds, 2),  # finished results only
            "summary": done.stderr.strip().splitlines()[-1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--model", type=Path, default=None, help="card or ONNX to serve")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the blob path's results")
    args = parser.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("Node.js is needed for the emulators")
    model = args.model or next((m for m in DEFAULT_MODELS if m.exists()), None)
    if model is None:
        raise SystemExit("no model: run `make model` or give --model (or MODEL=...)")
    print(json.dumps({"machine": machine(), "model": str(model), "photos": args.photos}), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-client-") as scratch:
        root = Path(scratch)
        files = make_folder(root / "photos", args.photos)
        ports = {name: free_port() for name in ("blob", "queue", "table", "cosmos", "api")}
        storage = connection_string(ports["blob"], ports["queue"], ports["table"])
        sample = json.loads((ROOT / "local.settings.sample.json").read_text())
        sample["Values"].update({"AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
                                 "COSMOS_ENDPOINT": f"https://127.0.0.1:{ports['cosmos']}",
                                 "AUTH_SIGNING_KEY": SIGNING_KEY})
        (root / "local.settings.sample.json").write_text(json.dumps(sample))
        up = stack(root, ports, "up", "--timeout", "180", "--model", str(model))
        if up.returncode != 0:
            print(up.stdout + up.stderr, file=sys.stderr)
            return 1
        api = f"http://127.0.0.1:{ports['api']}/api"
        try:
            with httpx.Client(base_url=api + "/", timeout=120) as http:
                blob_path(http, files[:8], "bench-warm", args.timeout)  # model loaded, connections open
                # blob, CLI, blob: the blob figure is the mean of the runs before and after the CLI, so a load
                # that rises or falls during the run (a shared machine) does not land on one side only
                before = blob_path(http, files, "bench-blob-1", args.timeout)
                print(json.dumps({"blob_before": before, "load": list(os.getloadavg())}), flush=True)
                cli = cli_path(api, root / "photos", "bench-cli", root / "cli.csv")
                print(json.dumps({"cli": cli, "load": list(os.getloadavg())}), flush=True)
                after = blob_path(http, files, "bench-blob-2", args.timeout)
                print(json.dumps({"blob_after": after, "load": list(os.getloadavg())}), flush=True)
        finally:
            stack(root, ports, "down")
    blob_img_s = round((before["img_s"] + after["img_s"]) / 2, 2)
    ratio = round(cli["img_s"] / blob_img_s, 3) if blob_img_s else 0.0
    print(json.dumps({"cli_img_s": cli["img_s"], "blob_img_s": blob_img_s, "cli_over_blob": ratio}))
    complete = all(run["done"] == run["photos"] for run in (before, cli, after))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
