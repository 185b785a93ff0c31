"""Background processes owned by the dev stack: start in their own process group, wait for ports, stop cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"


class ProcessStartError(RuntimeError):
    """A background process exited or did not become ready in time; the message carries its log tail."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a new listener could bind host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Without SO_REUSEADDR a port in TIME_WAIT from a stopped server would look busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it is empty or missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` in clock ticks, or None when no such process exists.

    Stored next to a PID so that a later `stop` never signals an unrelated process that reused the PID.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_running(pid: int, start_time: int | None = None) -> bool:
    """True when `pid` is alive (and, if given, is still the process that started at `start_time`)."""
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def stop_process_group(pid: int, *, start_time: int | None = None, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `pid`, wait, then SIGKILL whatever is left of it."""
    if not is_running(pid, start_time):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still "exists" for killpg until reaped; treat zombies as gone.
    return any(process_start_time(pid) is not None for pid in _group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class ManagedProcess:
    """A process started in its own session (process group) with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id, which is also its process-group id."""
        return self.process.pid

    @property
    def start_time(self) -> int | None:
        """The kernel start time of the process (see `process_start_time`)."""
        return process_start_time(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process log."""
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process group, wait for it, and kill it if it does not exit in time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        # Children that outlived the leader still belong to its group.
        stop_process_group(self.pid, timeout=timeout)

    def wait_for_ports(self, ports: Sequence[int], timeout: float) -> None:
        """Block until every port accepts connections; raise ProcessStartError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while pending:
            if self.process.poll() is not None:
                raise ProcessStartError(
                    f"{self.name} exited with code {self.process.returncode} before listening on {pending}; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            pending = [port for port in pending if not port_is_open(port)]
            if not pending:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessStartError(
                    f"{self.name} was not listening on {pending} after {timeout:.0f} s; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_background(name: str, command: Sequence[str], *, log_path: Path, cwd: Path,
                     env: dict[str, str] | None = None) -> ManagedProcess:
    """Start `command` in a new session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # The child keeps its own copy of the log descriptor; a new session makes it the leader of a
        # process group, so stop() reaches its children too and it outlives a parent that exits (stack up).
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(name=name, process=process, log_path=log_path)
