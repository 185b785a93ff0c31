"""Calling user functions as the Python worker does: bind arguments by name, run sync code in threads."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import time
import typing
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc as functions_abc
from azure.functions.decorators.core import Binding, Trigger

logger = logging.getLogger("devstack.host")


class FunctionIndexError(ValueError):
    """A function cannot be run by this host (unknown binding, parameter it cannot fill)."""


@dataclass(frozen=True)
class IndexedFunction:
    """One function of the app with what the host needs to invoke it."""

    name: str
    trigger: Trigger
    bindings: tuple[Binding, ...]
    user_function: Callable[..., Any]
    parameters: Mapping[str, inspect.Parameter]
    annotations: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        """True for `async def` functions, which run on the host's event loop."""
        return inspect.iscoroutinefunction(self.user_function)

    def other_bindings(self) -> list[Binding]:
        """Bindings besides the trigger and the HTTP `$return` output."""
        return [b for b in self.bindings if b is not self.trigger and b.get_binding_name() != "http"]

    def unbindable(self, available: set[str]) -> list[str]:
        """Required parameters that are neither in `available`, the trigger, nor `context`."""
        names = available | {self.trigger.name, "context"}
        return [name for name, parameter in self.parameters.items()
                if name not in names and parameter.default is inspect.Parameter.empty]


def index_app(app: func.FunctionRegister) -> list[IndexedFunction]:
    """The app's own function metadata; `get_functions()` may be called only once per app object."""
    indexed = []
    for function in app.get_functions():
        trigger = function.get_trigger()
        if trigger is None:  # get_functions() already rejects this; kept for the type checker
            raise FunctionIndexError(f"function {function.get_function_name()} has no trigger")
        user_function = function.get_user_function()
        try:
            hints = typing.get_type_hints(user_function)
        except (NameError, TypeError):
            # A forward reference the module cannot resolve: bind by name only, as the worker falls back to.
            hints = {}
        indexed.append(IndexedFunction(
            name=function.get_function_name() or user_function.__name__,
            trigger=trigger,
            bindings=tuple(function.get_bindings()),
            user_function=user_function,
            parameters=dict(inspect.signature(user_function).parameters),
            annotations=hints,
        ))
    return indexed


class _TraceContext(functions_abc.TraceContext):
    def __init__(self, trace_parent: str) -> None:
        self._trace_parent = trace_parent

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._trace_parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RpcException(functions_abc.RpcException):
    def __init__(self, error: BaseException | None) -> None:
        self._error = error

    @property
    def source(self) -> str:
        return type(self._error).__module__ if self._error else ""

    @property
    def stack_trace(self) -> str:
        return ""

    @property
    def message(self) -> str:
        return str(self._error) if self._error else ""


class _RetryContext(functions_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int, error: BaseException | None) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count
        self._error = error

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> functions_abc.RpcException:
        return _RpcException(self._error)


class InvocationContext(func.Context):
    """The `context` argument: invocation id, function name and directory, trace and retry state."""

    def __init__(self, function_name: str, function_directory: str, *, retry_count: int = 0,
                 max_retry_count: int = 0, last_error: BaseException | None = None) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local_storage = threading.local()
        self._trace_context = _TraceContext(f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01")
        self._retry_context = _RetryContext(retry_count, max_retry_count, last_error)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._thread_local_storage  # type: ignore[return-value]  # the worker returns an instance too

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> functions_abc.TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> functions_abc.RetryContext:
        return self._retry_context


class Invoker:
    """Runs invocations with Core Tools-style log lines; sync functions go to a thread pool."""

    def __init__(self, function_directory: str, max_threads: int | None = None) -> None:
        self.function_directory = function_directory
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="invocation")
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Invocations started and not yet finished."""
        return self._in_flight

    async def invoke(self, function: IndexedFunction, trigger_value: Any, *, reason: str,
                     extras: Mapping[str, Any] | None = None, retry_count: int = 0, max_retry_count: int = 0,
                     last_error: BaseException | None = None) -> Any:
        """Call the user function once with the trigger value, `context` and any extra named arguments."""
        context = InvocationContext(function.name, self.function_directory, retry_count=retry_count,
                                    max_retry_count=max_retry_count, last_error=last_error)
        arguments = self._bind(function, trigger_value, context, extras or {})
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", function.name, reason, context.invocation_id)
        started = time.perf_counter()
        self._in_flight += 1
        self._idle.clear()
        try:
            if function.is_async:
                result = await function.user_function(**arguments)
            else:
                call = functools.partial(function.user_function, **arguments)
                # copy_context keeps contextvars (logging correlation, OpenTelemetry) as the worker does.
                result = await asyncio.get_running_loop().run_in_executor(
                    self._executor, contextvars.copy_context().run, call)
        except Exception as exc:
            logger.error("Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms): %s: %s", function.name,
                         context.invocation_id, (time.perf_counter() - started) * 1000, type(exc).__name__, exc,
                         exc_info=exc)
            raise
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        logger.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", function.name,
                    context.invocation_id, (time.perf_counter() - started) * 1000)
        return result

    @staticmethod
    def _bind(function: IndexedFunction, trigger_value: Any, context: InvocationContext,
              extras: Mapping[str, Any]) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        for name in function.parameters:
            annotation = function.annotations.get(name)
            if name == function.trigger.name:
                arguments[name] = trigger_value
            elif name == "context" or (inspect.isclass(annotation) and issubclass(annotation, func.Context)):
                arguments[name] = context
            elif name in extras:
                arguments[name] = extras[name]
        return arguments

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for in-flight invocations; True when none is left."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def shutdown(self) -> None:
        """Stop accepting work in the thread pool without waiting for running invocations."""
        self._executor.shutdown(wait=False, cancel_futures=True)
