"""A local Functions host: runs the app's own `FunctionApp` object with its own metadata, like `func start`.

    python -m devstack.host [function_app:app [monitor_app:app ...]] --port 7071 [--settings local.settings.json]

With no app named, the host loads the entry script PYTHON_SCRIPT_FILE_NAME names (after the settings are
applied; default function_app.py), as the Python worker does in Azure: the monitor app sets monitor_app.py.
Several apps in one host share its port and triggers (`make up` loads the API and the monitor together).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import azure.functions as func
import uvicorn
from azure.functions.decorators.blob import BlobTrigger
from azure.functions.decorators.http import HttpTrigger
from azure.functions.decorators.timer import TimerTrigger

from devstack.blob_queue import BlobQueueOptions, BlobTriggerQueue, Registration, is_event_grid
from devstack.blob_trigger import BlobTriggerListener, BlobTriggerOptions
from devstack.event_grid import (
    ContentLengthFilter,
    EventGridSource,
    SubscriptionOptions,
    storage_client,
    webhook_url,
)
from devstack.http_dispatch import HttpDispatcher, HttpRoute, compile_route
from devstack.invocation import IndexedFunction, Invoker, index_app
from devstack.local_settings import apply_values, read_host_json, read_values
from devstack.processes import LOOPBACK, port_is_free
from devstack.timer_trigger import TimerSchedule

logger = logging.getLogger("devstack.host")


class HostStartError(RuntimeError):
    """The host cannot start: app not importable, port busy."""


@dataclass(frozen=True)
class EventGridOptions:
    """Where Event Grid-sourced blob triggers get their events from.

    `embedded`: this host also runs the local Event Grid (devstack.event_grid), one subscription per function,
    posting to this host's own webhook (its state lives in storage, so a restart resumes its deliveries).
    `external`: only the webhook is served; a separate `python -m devstack.event_grid` delivers, as Event Grid
    does in Azure (it keeps retrying while the host is down).
    """

    mode: str = "embedded"
    poll_seconds: float = 0.5
    retry_scale: float = 1.0
    max_delivery_attempts: int = 30
    duplicates: float = 0.0
    reorder: float = 0.0
    # Per function: the subscription's advanced filter on data.contentLength (none: every BlobCreated event).
    content_length: Mapping[str, ContentLengthFilter] = field(default_factory=dict)


def parse_event_grid_filter(text: str) -> tuple[str, ContentLengthFilter]:
    """`classify_uploaded_blob=le:20971520` -> the function and its subscription's content-length filter."""
    function, separator, condition = text.partition("=")
    if not separator or not function:
        raise argparse.ArgumentTypeError(f"expected FUNCTION=le:<bytes> or FUNCTION=gt:<bytes>, not {text!r}")
    try:
        return function, ContentLengthFilter.parse(condition)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


@dataclass(frozen=True)
class HostOptions:
    """Command-line options of the host."""

    app: str
    port: int = 7071
    also: tuple[str, ...] = ()  # more apps served by the same host (the monitor beside the API)
    settings: Path = Path("local.settings.json")
    host_json: Path = Path("host.json")
    host_id: str = ""
    blob: BlobTriggerOptions = field(default_factory=lambda: BlobTriggerOptions(host_id="devstack"))
    blob_queue: BlobQueueOptions = field(default_factory=lambda: BlobQueueOptions(host_id="devstack"))
    event_grid: EventGridOptions = field(default_factory=EventGridOptions)
    shutdown_grace_seconds: float = 10.0


def load_app(spec: str) -> func.FunctionRegister:
    """Import `module:attribute` and return the FunctionApp object it names."""
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, func.FunctionRegister):
        raise HostStartError(f"{spec} is not an azure.functions FunctionApp (got {type(app).__name__})")
    return app


DEFAULT_SCRIPT = "function_app.py"


def script_app_spec(script: str | None = None) -> str:
    """`module:app` of the entry script PYTHON_SCRIPT_FILE_NAME names (the Python worker's rule)."""
    name = (script if script is not None else os.environ.get("PYTHON_SCRIPT_FILE_NAME", "")).strip() or DEFAULT_SCRIPT
    path = Path(name)
    if path.suffix != ".py" or path.is_absolute() or ".." in path.parts:
        raise HostStartError(f"PYTHON_SCRIPT_FILE_NAME={name!r} must name a .py file inside the app folder")
    return ".".join(path.with_suffix("").parts) + ":app"


def default_host_id(app_spec: str) -> str:
    """A stable host id per app, which keys the blob receipts (Functions derives its own per app)."""
    return ("devstack-" + re.sub(r"[^a-z0-9]+", "-", app_spec.lower())).strip("-")[:32]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the host owns SIGTERM/SIGINT to stop triggers first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class FunctionHost:
    """HTTP, blob and timer triggers of one app in one process and one event loop."""

    def __init__(self, app: func.FunctionRegister | Sequence[func.FunctionRegister], options: HostOptions) -> None:
        self.apps = [app] if isinstance(app, func.FunctionRegister) else list(app)
        self.app = self.apps[0]
        self.options = options
        self.invoker = Invoker(function_directory=str(Path.cwd()))
        self.routes: list[HttpRoute] = []
        self.blob_listeners: list[BlobTriggerListener] = []
        self.blob_queue = BlobTriggerQueue(self.invoker, options.blob_queue)
        self.event_grid: list[EventGridSource] = []
        self._event_grid_tasks: list[asyncio.Task[None]] = []
        self.timers: list[TimerSchedule] = []
        self._stop = asyncio.Event()

    def index(self) -> None:
        """Read the app's functions once and prepare a listener for each trigger this host emulates."""
        for function in (function for app in self.apps for function in index_app(app)):
            try:
                self._add(function)
            except Exception as exc:
                # Core Tools reports a broken function and runs the others; so does this host.
                logger.error("The '%s' function is in error: %s", function.name, exc)

    def _add(self, function: IndexedFunction) -> None:
        unsupported = function.other_bindings()
        if unsupported:
            names = ", ".join(sorted({b.get_binding_name() for b in unsupported}))
            raise ValueError(f"bindings not emulated by devstack.host: {names}")
        trigger = function.trigger
        if isinstance(trigger, HttpTrigger):
            self.routes.append(compile_route(function))
        elif isinstance(trigger, BlobTrigger) and is_event_grid(function):
            self.blob_queue.add(function)
        elif isinstance(trigger, BlobTrigger):
            self.blob_listeners.append(BlobTriggerListener(function, self.invoker, self.options.blob))
        elif isinstance(trigger, TimerTrigger):
            self.timers.append(TimerSchedule(function, self.invoker))
        else:
            raise ValueError(f"trigger '{trigger.get_binding_name()}' is not emulated by devstack.host")

    def request_stop(self) -> None:
        """Begin a graceful shutdown (signal handlers call this)."""
        self._stop.set()

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop triggers, drain invocations and notify the ASGI app."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        prefix = read_host_json(self.options.host_json).route_prefix
        self.index()
        self._log_functions(prefix)
        if not port_is_free(self.options.port):
            raise HostStartError(f"port {self.options.port} on {LOOPBACK} is already in use (another host running?)")
        dispatcher = HttpDispatcher(self.routes, prefix, self.invoker, webhooks={"blobs": self._blobs_webhook})
        server = _Server(uvicorn.Config(dispatcher, host=LOOPBACK, port=self.options.port, log_level="warning",
                                        lifespan="on", access_log=False))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if serving.done():
            serving.result()
            raise HostStartError(f"the HTTP server on port {self.options.port} stopped during start-up")
        for listener in self.blob_listeners:
            await listener.start()
        await self.blob_queue.start()
        if self.options.event_grid.mode == "embedded":
            self._start_event_grid()
        for timer in self.timers:
            timer.start()
        logger.info("Host started: %d functions, http://%s:%d/%s", len(self.routes) + len(self.blob_listeners)
                    + len(self.blob_queue.functions) + len(self.timers), LOOPBACK, self.options.port, prefix)
        await self._stop.wait()
        await self._shutdown(server, serving)

    async def _blobs_webhook(self, query: Mapping[str, str], headers: Mapping[str, str],
                             body: bytes) -> tuple[int, bytes, str]:
        answer = await self.blob_queue.webhook(query, headers, body)
        return answer.status, answer.body, answer.content_type

    def _start_event_grid(self) -> None:
        options = self.options.event_grid
        base = f"http://{LOOPBACK}:{self.options.port}"
        for registration in self.blob_queue.functions.values():
            source = EventGridSource(storage_client(_connection_of(registration)), SubscriptionOptions(
                webhook=webhook_url(base, registration.function.name), container=registration.pattern.container,
                blob_prefix=registration.pattern.listing_prefix, name=f"devstack-{registration.function.name}"
                .lower().replace("_", "-"), poll_seconds=options.poll_seconds, retry_scale=options.retry_scale,
                max_delivery_attempts=options.max_delivery_attempts, duplicates=options.duplicates,
                reorder=options.reorder, content_length=options.content_length.get(registration.function.name)))
            self.event_grid.append(source)
            self._event_grid_tasks.append(asyncio.create_task(source.run(), name=f"eventgrid-{source.options.name}"))

    async def _shutdown(self, server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
        logger.info("Stopping host: no new triggers, draining invocations (up to %.0f s)",
                    self.options.shutdown_grace_seconds)
        grace = self.options.shutdown_grace_seconds
        for source in self.event_grid:
            source.stop()
        await asyncio.gather(*self._event_grid_tasks, return_exceptions=True)
        await asyncio.gather(*(listener.stop(grace) for listener in self.blob_listeners),
                             self.blob_queue.stop(grace), *(timer.stop() for timer in self.timers))
        server.should_exit = True
        await serving
        drained = await self.invoker.drain(grace)
        for app in self.apps:
            if isinstance(app, func.AsgiFunctionApp) and app.startup_task_done:
                await app.middleware.notify_shutdown()  # type: ignore[no-untyped-call]
                app.startup_task_done = False  # its __del__ would notify a second time
        self.invoker.shutdown()
        if not drained:
            logger.warning("%d invocations still running after %.0f s; abandoning them", self.invoker.in_flight, grace)
        logger.info("Host stopped")

    def _log_functions(self, prefix: str) -> None:
        logger.info("Functions:")
        base = f"http://{LOOPBACK}:{self.options.port}/{prefix}".rstrip("/")
        for route in self.routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            logger.info("        %s: [%s] %s/%s", route.function.name, methods, base, route.template)
        for listener in self.blob_listeners:
            logger.info("        %s: blobTrigger", listener.function.name)
        for registration in self.blob_queue.functions.values():
            logger.info("        %s: blobTrigger (EventGrid) %s/runtime/webhooks/blobs?functionName=%s",
                        registration.function.name, f"http://{LOOPBACK}:{self.options.port}", registration.function_id)
        for timer in self.timers:
            logger.info("        %s: timerTrigger", timer.function.name)


def _connection_of(registration: Registration) -> str:
    from devstack.blob_trigger import connection_string_for  # noqa: PLC0415

    trigger = registration.function.trigger
    assert isinstance(trigger, BlobTrigger)
    return connection_string_for(trigger.connection)


def parse_args(argv: Sequence[str] | None = None) -> HostOptions:
    """Options from the command line."""
    parser = argparse.ArgumentParser(prog="python -m devstack.host", description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="*", help="FunctionApps as module:attribute, e.g. function_app:app; "
                        "default: the entry script PYTHON_SCRIPT_FILE_NAME names (function_app.py)")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"),
                        help="local.settings.json whose Values are exported (existing environment wins)")
    parser.add_argument("--host-json", type=Path, default=Path("host.json"))
    parser.add_argument("--host-id", default="", help="keys the blob receipts; default derived from the app")
    parser.add_argument("--blob-poll-seconds", type=float, default=1.0)
    parser.add_argument("--blob-max-attempts", type=int, default=None,
                        help="attempts before a blob is poison; default host.json poisonBlobThreshold, else 5")
    parser.add_argument("--blob-workers", type=int, default=None,
                        help="blobs processed at once; default host.json maxDegreeOfParallelism, else 2")
    parser.add_argument("--blob-retry-seconds", type=float, default=1.0, help="first retry delay; doubles per attempt")
    parser.add_argument("--blob-visibility-seconds", type=int, default=30,
                        help="EventGrid blob triggers: seconds a dequeued message stays invisible (renewed)")
    parser.add_argument("--event-grid", choices=("embedded", "external"), default="embedded",
                        help="embedded: this host also runs the local Event Grid; external: only serve the webhook")
    parser.add_argument("--event-grid-poll-seconds", type=float, default=0.5)
    parser.add_argument("--event-grid-retry-scale", type=float, default=1.0,
                        help="multiplies Event Grid's retry schedule (10 s, 30 s, 1 min, ...)")
    parser.add_argument("--event-grid-max-attempts", type=int, default=30)
    parser.add_argument("--event-grid-duplicates", type=float, default=0.0, help="share of events delivered twice")
    parser.add_argument("--event-grid-reorder", type=float, default=0.0, help="share of events delivered late")
    parser.add_argument("--event-grid-filter", type=parse_event_grid_filter, action="append", default=[],
                        metavar="FUNCTION=le:BYTES|gt:BYTES",
                        help="the function's subscription filters data.contentLength (repeat per function)")
    parser.add_argument("--shutdown-grace-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    apps: list[str] = args.app
    host_id = args.host_id or (default_host_id(apps[0]) if apps else "")
    host_json = read_host_json(args.host_json)
    return HostOptions(
        app=apps[0] if apps else "", also=tuple(apps[1:]), port=args.port, settings=args.settings,
        host_json=args.host_json, host_id=host_id,
        blob=BlobTriggerOptions(host_id=host_id, poll_seconds=args.blob_poll_seconds,
                                max_attempts=args.blob_max_attempts or host_json.blob_max_attempts or 5,
                                workers=args.blob_workers or host_json.blob_workers or 2,
                                retry_base_seconds=args.blob_retry_seconds),
        blob_queue=BlobQueueOptions(host_id=host_id, poll_seconds=args.blob_poll_seconds,
                                    max_attempts=args.blob_max_attempts or host_json.blob_max_attempts or 5,
                                    workers=args.blob_workers or host_json.blob_workers or 2,
                                    retry_base_seconds=args.blob_retry_seconds,
                                    visibility_seconds=args.blob_visibility_seconds),
        event_grid=EventGridOptions(mode=args.event_grid, poll_seconds=args.event_grid_poll_seconds,
                                    retry_scale=args.event_grid_retry_scale,
                                    max_delivery_attempts=args.event_grid_max_attempts,
                                    duplicates=args.event_grid_duplicates, reorder=args.event_grid_reorder,
                                    content_length=dict(args.event_grid_filter)),
        shutdown_grace_seconds=args.shutdown_grace_seconds,
    )


def configure_logging() -> None:
    """Core Tools-like log lines on stderr; the Azure SDK's per-request INFO lines are muted."""
    logging.Formatter.converter = time.gmtime
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s.%(msecs)03dZ] %(levelname)s %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S", stream=sys.stderr)
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the local Event Grid's POSTs
    # The local Cosmos server's certificate is self-signed by design; urllib3 would warn on every request.
    warnings.filterwarnings("ignore", message=r"Unverified HTTPS request is being made to host '127\.0\.0\.1'")


def with_entry_script(options: HostOptions) -> HostOptions:
    """Options naming the app PYTHON_SCRIPT_FILE_NAME selects when the command line named none."""
    if options.app:
        return options
    spec = script_app_spec()
    host_id = options.host_id or default_host_id(spec)
    return dataclasses.replace(options, app=spec, host_id=host_id,
                               blob=dataclasses.replace(options.blob, host_id=host_id),
                               blob_queue=dataclasses.replace(options.blob_queue, host_id=host_id))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: load settings, import the app, serve until a signal."""
    configure_logging()
    options = parse_args(argv)
    applied = apply_values(read_values(options.settings))
    # Core Tools marks the local environment the same way.
    os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
    logger.info("Loaded %d settings from %s", len(applied), options.settings)
    try:
        options = with_entry_script(options)
    except HostStartError as exc:
        logger.error("%s", exc)
        return 1
    if os.environ.get("DEVSTACK_FAULTS", "").strip():
        from devstack.faults import install_from_env  # noqa: PLC0415 - local fault injection, only when asked

        injector = install_from_env()
        if injector is not None:
            logger.warning("Fault injection is ON (DEVSTACK_FAULTS=%s): %s", os.environ["DEVSTACK_FAULTS"],
                           ", ".join(f"{target}={service}" for target, service in injector.targets.items()))
    try:
        apps = [load_app(spec) for spec in (options.app, *options.also)]
        host = FunctionHost(apps, options)
        asyncio.run(host.run())
    except HostStartError as exc:
        logger.error("%s", exc)
        return 1
    if host.invoker.in_flight:
        # Sync invocations still running in threads would block interpreter exit; their blobs are redelivered.
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
