"""Azurite (Storage) and the Cosmos DB REST server as local processes with known ports, keys and endpoints."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.loopback_tls import make_loopback_certificate
from devstack.processes import LOOPBACK, ManagedProcess, ProcessStartError, free_port, start_background

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "COSMOS_EMULATOR_KEY",
    "Azurite",
    "CosmosServer",
    "NodeMissing",
    "ensure_node_modules",
    "free_port",
    "start_azurite",
    "start_cosmos",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = PROJECT_ROOT / "node_modules"
AZURITE_JS = NODE_MODULES / "azurite" / "dist" / "src" / "azurite.js"
COSMOS_JS = NODE_MODULES / "@vercel" / "cosmosdb-server" / "lib" / "cli.js"
UDK_SAS_SHIM = Path(__file__).resolve().parent / "azurite_udk_sas.js"
INSTALL_STAMP = NODE_MODULES / ".devstack-install.sha256"

# Published, well-known development credentials of the emulators; they grant nothing outside this machine.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


class NodeMissing(RuntimeError):
    """Node.js or npm is not on PATH, so the emulators cannot run."""


def _install_fingerprint() -> str:
    """Hash of what `npm ci` installs from: the lock file and the patches applied after it."""
    digest = hashlib.sha256((PROJECT_ROOT / "package-lock.json").read_bytes())
    for patch in sorted((PROJECT_ROOT / "patches").glob("*.patch")):
        digest.update(patch.name.encode())
        digest.update(patch.read_bytes())
    return digest.hexdigest()


def _installed_after_inputs() -> bool:
    """True when npm's own record of the install is newer than package.json, the lock file and the patches."""
    hidden_lock = NODE_MODULES / ".package-lock.json"
    if not hidden_lock.exists():
        return False
    inputs = [PROJECT_ROOT / "package.json", PROJECT_ROOT / "package-lock.json",
              *(PROJECT_ROOT / "patches").glob("*.patch")]
    return all(hidden_lock.stat().st_mtime >= path.stat().st_mtime for path in inputs)


def ensure_node_modules() -> None:
    """Run `npm ci` when node_modules is missing or was installed from another lock file or patch set."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeMissing("node and npm are required for Azurite and the Cosmos server (install Node.js >= 20)")
    lock_dir = PROJECT_ROOT / ".run"
    lock_dir.mkdir(exist_ok=True)
    # Two pytest processes or a test run beside `stack up` must not run `npm ci` over each other.
    with (lock_dir / "npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = _install_fingerprint()
        if AZURITE_JS.exists() and COSMOS_JS.exists():
            if not INSTALL_STAMP.exists() and _installed_after_inputs():
                INSTALL_STAMP.write_text(wanted + "\n", encoding="ascii")  # a plain `npm ci` (make) did the install
            if INSTALL_STAMP.exists() and INSTALL_STAMP.read_text(encoding="ascii").strip() == wanted:
                return
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            raise RuntimeError(f"npm ci failed with exit code {result.returncode}:\n{output}")
        INSTALL_STAMP.write_text(wanted + "\n", encoding="ascii")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeMissing("node is not on PATH (install Node.js >= 20)")
    return node


@dataclass
class Azurite(ManagedProcess):
    """A running Azurite with blob, queue and table endpoints on loopback."""

    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    ca_file: Path | None = None  # set in OAuth mode: HTTPS with a loopback certificate signed by this CA

    @property
    def scheme(self) -> str:
        return "http" if self.ca_file is None else "https"

    @property
    def blob_endpoint(self) -> str:
        """Blob service URL including the account path segment (STORAGE_ACCOUNT_URL for identity access)."""
        return f"{self.scheme}://{LOOPBACK}:{self.blob_port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """Full connection string with explicit endpoints (no reliance on default ports)."""
        return connection_string(self.blob_port, self.queue_port, self.table_port, scheme=self.scheme)


def connection_string(blob_port: int, queue_port: int, table_port: int, *, scheme: str = "http") -> str:
    """The Azurite connection string for the given loopback ports."""
    return (
        f"DefaultEndpointsProtocol={scheme};AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={scheme}://{LOOPBACK}:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint={scheme}://{LOOPBACK}:{queue_port}/{AZURITE_ACCOUNT};"
        f"TableEndpoint={scheme}://{LOOPBACK}:{table_port}/{AZURITE_ACCOUNT};"
    )


@dataclass
class CosmosServer(ManagedProcess):
    """A running Cosmos DB REST server (HTTPS, self-signed certificate, data in memory)."""

    port: int = 0

    @property
    def endpoint(self) -> str:
        """The account endpoint for `CosmosClient` (use connection_verify=False: the certificate is self-signed)."""
        return f"https://{LOOPBACK}:{self.port}/"

    @property
    def key(self) -> str:
        """The emulator's well-known key; the server accepts any key."""
        return COSMOS_EMULATOR_KEY


def start_azurite(workdir: Path, *, blob_port: int | None = None, queue_port: int | None = None,
                  table_port: int | None = None, timeout: float = 60.0, oauth: bool = False) -> Azurite:
    """Start Azurite with its data and log under `workdir`; ports default to free ones.

    `oauth=True` runs it the way the Azure path needs: HTTPS with a fresh loopback certificate
    (`Azurite.ca_file` is the CA to trust) and `--oauth basic`, so bearer tokens from a managed identity are
    accepted (Azurite checks their issuer, audience and lifetime, not the signature) and user delegation
    keys can be requested. Shared-key access keeps working, as Azurite has no switch to turn it off.
    """
    ports = [blob_port or free_port(), queue_port or free_port(), table_port or free_port()]
    data_dir = workdir / "azurite"
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        _node(), str(AZURITE_JS),
        "--blobHost", LOOPBACK, "--blobPort", str(ports[0]),
        "--queueHost", LOOPBACK, "--queuePort", str(ports[1]),
        "--tableHost", LOOPBACK, "--tablePort", str(ports[2]),
        "--location", str(data_dir), "--skipApiVersionCheck", "--disableTelemetry", "--silent",
    ]
    ca_file, env = None, None
    if oauth:
        certificate = make_loopback_certificate(workdir / "tls")
        command += ["--oauth", "basic", "--cert", str(certificate.cert_file), "--key", str(certificate.key_file)]
        command[1] = str(UDK_SAS_SHIM)  # loads Azurite itself after its one patch (see the script)
        env = {**os.environ, "AZURITE_SRC": str(AZURITE_JS.parent)}
        ca_file = certificate.ca_file
    started = start_background("azurite", command, log_path=workdir / "azurite.log", cwd=workdir, env=env)
    azurite = Azurite(name=started.name, process=started.process, log_path=started.log_path,
                      blob_port=ports[0], queue_port=ports[1], table_port=ports[2], ca_file=ca_file)
    azurite.wait_for_ports(ports, timeout)
    return azurite


def start_cosmos(workdir: Path, *, port: int | None = None, timeout: float = 60.0,
                 keep_alive: bool = True) -> CosmosServer:
    """Start the Cosmos DB REST server (HTTPS) on loopback with its log under `workdir`.

    The package's CLI answers every request with `Connection: close`, so each Cosmos call would pay a new
    TCP + TLS handshake (and, in the Python client, a fresh SSL context): ~10x the call itself (docs/benchmark.md).
    Azure Cosmos DB keeps connections alive, so by default the server is created through its library API with
    keep-alive on; `keep_alive=False` runs the CLI as shipped.
    """
    chosen = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    if keep_alive:
        script = (f"const s = require({json.dumps(str(COSMOS_JS.parent))}).createHttpsServer({{keepAlive: true}});"
                  f"s.keepAliveTimeout = 120000; s.listen({chosen}, {json.dumps(LOOPBACK)});")
        command = [_node(), "-e", script]
    else:
        command = [_node(), str(COSMOS_JS), "--host", LOOPBACK, "--port", str(chosen)]
    started = start_background("cosmos", command, log_path=workdir / "cosmos.log", cwd=workdir)
    cosmos = CosmosServer(name=started.name, process=started.process, log_path=started.log_path, port=chosen)
    cosmos.wait_for_ports([chosen], timeout)
    return cosmos


@contextlib.contextmanager
def running_emulators(workdir: Path) -> Iterator[tuple[Azurite, CosmosServer]]:
    """Both emulators on free ports for the duration of a `with` block."""
    ensure_node_modules()
    with start_azurite(workdir) as azurite, start_cosmos(workdir) as cosmos:
        yield azurite, cosmos


def describe_start_error(error: ProcessStartError) -> str:
    """A one-paragraph hint for a start failure, for command-line output."""
    return f"{error}\nHint: is another emulator already running, or node_modules incomplete (run `npm ci`)?"
