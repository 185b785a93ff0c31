"""One Azurite and one Cosmos server per test process, however many conftest files ask for them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from devstack.emulators import Azurite, CosmosServer, ensure_node_modules, start_azurite, start_cosmos
from devstack.processes import ManagedProcess

EmulatorT = TypeVar("EmulatorT", bound=ManagedProcess)

# pytest gives each conftest its own session fixture; sharing through this module (imported once) keeps
# the 2-core machine from running two copies of each emulator. Values: (emulator, number of holders).
_running: dict[str, tuple[Any, int]] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def _shared(kind: str, start: Callable[[], EmulatorT]) -> Iterator[EmulatorT]:
    with _lock:
        if kind in _running:
            emulator, holders = _running[kind]
            _running[kind] = (emulator, holders + 1)
        else:
            ensure_node_modules()
            emulator = start()
            _running[kind] = (emulator, 1)
    try:
        yield emulator
    finally:
        with _lock:
            emulator, holders = _running.pop(kind)
            if holders > 1:
                _running[kind] = (emulator, holders - 1)
            else:
                emulator.stop()


def shared_azurite(workdir: Path) -> contextlib.AbstractContextManager[Azurite]:
    """Azurite on free loopback ports, started by the first holder and stopped by the last."""
    return _shared("azurite", lambda: start_azurite(workdir))


def shared_cosmos(workdir: Path) -> contextlib.AbstractContextManager[CosmosServer]:
    """The Cosmos server on a free loopback port, started by the first holder and stopped by the last."""
    return _shared("cosmos", lambda: start_cosmos(workdir))
