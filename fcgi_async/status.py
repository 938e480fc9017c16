"""Status and ping endpoints, php-fpm compatible, answered before the application.

With ``status_path`` or ``ping_path`` set, :class:`StatusApp` stands in front of the
application. A request is theirs when its path equals the setting; the path is DOCUMENT_URI,
else SCRIPT_NAME + PATH_INFO, else the path of REQUEST_URI (php-fpm compares SCRIPT_NAME;
nginx's ``fastcgi_params`` send DOCUMENT_URI, which is the same normalized path without
the query).

Who may see them: the end user, not the web server. The web server's own address was already
checked at accept (``allowed_clients``), and a ``location / { fastcgi_pass ...; }`` would
otherwise publish the status page to the world. So the request's REMOTE_ADDR (or, when the
web server sends none, the connection's peer address; unix-socket peers without REMOTE_ADDR
are local) must be in ``allowed_clients``; when that is empty (everyone may connect), only
loopback addresses may. Others get ``403``.

Fields (php-fpm's names and meanings), aggregated over every worker through the supervisor's
:class:`~fcgi_async.scoreboard.Scoreboard`, or from this process's counters when the server
runs inline:

* accepted conn: requests accepted since the pool started, this status request included
  (requests of workers that exited are kept in the scoreboard's pool totals).
* listen queue / listen queue len: connections waiting in the accept queue of the listening
  sockets and its size (summed over the sockets). TCP on Linux: ``TCP_INFO`` of the
  listening socket (``tcpi_unacked`` is the accept queue, ``tcpi_sacked`` its size: what
  php-fpm and ``ss`` read), else ``/proc/net/tcp``/``tcp6`` by socket inode. Unix sockets:
  Linux does not expose their accept queue to the socket's owner (``/proc/net/unix`` shows no
  queue), so the queue is reported as 0 and the length as the configured backlog.
* max listen queue, max active processes: maxima sampled every second by each worker and
  whenever the status page is read.
* idle/active/total processes: workers with no request / at least one request running
  (a draining worker with requests counts as active); total = idle + active. A process is
  "active" while it runs one request or many.
* max children reached: times the process manager wanted a worker beyond
  ``pm_max_children`` (once per episode, as php-fpm): dynamic when it is short of spare
  workers, ondemand when a connection waits and no worker is idle; 0 for static and inline.
* slow requests: requests that ran past the slow-log timeout (``ServerState.slow_requests``).

Query options as php-fpm's: ``?json``, ``?openmetrics``, ``?full`` (per worker rows: pid,
state, start time, start since, requests, request duration (µs), request method, request URI,
content length; php-fpm's user, script, last request cpu and memory are ``-``/0). The rows show
each worker's current request, or its last one when idle. php-fpm's ``?html`` and ``?xml`` are
not offered (plain text is answered). OpenMetrics text uses php-fpm's
``phpfpm_*`` metric names, with ``_total`` on counters as the format requires.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cgi import parse_length, request_path
from .netaddr import host_allowed
from .scoreboard import WorkerState
from .types import Application, Request

if TYPE_CHECKING:
    from .server.state import ServerState

#: php-fpm's state names for the process rows.
STATE_NAMES = {
    WorkerState.STARTING: "Starting",
    WorkerState.IDLE: "Idle",
    WorkerState.BUSY: "Running",
    WorkerState.DRAINING: "Finishing",
}
#: Who may see the pages when ``allowed_clients`` is empty.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
TEXT_PLAIN = "text/plain; charset=utf-8"
JSON = "application/json"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_NO_CACHE = (
    b"Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    b"Cache-Control: no-cache, no-store, must-revalidate, max-age=0\r\n"
)
_FORBIDDEN = b"Access denied.\n"
_TCP_INFO_QUEUE = struct.Struct("=II")  # tcpi_unacked, tcpi_sacked
_TCP_INFO_QUEUE_OFFSET = 24


@dataclass(slots=True)
class ProcessStatus:
    """One worker's row of ``?full``."""

    pid: int
    state: str
    start_time: float
    requests: int
    request_duration_us: int
    request_method: str
    request_uri: str
    content_length: int


@dataclass(slots=True)
class PoolStatus:
    """The status page's fields (php-fpm's)."""

    pool: str
    process_manager: str
    start_time: float
    start_since: int
    accepted_conn: int
    listen_queue: int
    max_listen_queue: int
    listen_queue_len: int
    idle_processes: int
    active_processes: int
    total_processes: int
    max_active_processes: int
    max_children_reached: int
    slow_requests: int
    processes: list[ProcessStatus] = field(default_factory=list)


# ---------------------------------------------------------------------------- listen queue
def _proc_net_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(queue, size) of a listening TCP socket from /proc/net/tcp{,6}, by inode."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] == inode and fields[3] == "0A":
                        tx, _, rx = fields[4].partition(":")
                        return int(rx, 16), int(tx, 16)
        except OSError:
            continue
    return None


def listen_queue(sockets: Sequence[socket.socket], backlog: int) -> tuple[int, int]:
    """(connections waiting to be accepted, accept queue size), summed over ``sockets``."""
    queue = size = 0
    for sock in sockets:
        try:
            family = sock.family
        except OSError:
            continue
        if family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_INFO"):
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                waiting, limit = _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_OFFSET)
                queue += waiting
                size += limit
                continue
            except (OSError, struct.error):
                pass
            found = _proc_net_queue(sock)
            if found is not None:
                queue += found[0]
                size += found[1]
                continue
        size += backlog
    return queue, size


# ----------------------------------------------------------------------------- rendering
def _when(ts: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(ts))


_POOL_KEYS = (
    ("pool", "pool"),
    ("process manager", "process_manager"),
    ("start time", "start_time"),
    ("start since", "start_since"),
    ("accepted conn", "accepted_conn"),
    ("listen queue", "listen_queue"),
    ("max listen queue", "max_listen_queue"),
    ("listen queue len", "listen_queue_len"),
    ("idle processes", "idle_processes"),
    ("active processes", "active_processes"),
    ("total processes", "total_processes"),
    ("max active processes", "max_active_processes"),
    ("max children reached", "max_children_reached"),
    ("slow requests", "slow_requests"),
)


def _process_items(p: ProcessStatus, now: float, *, text: bool) -> list[tuple[str, Any]]:
    return [
        ("pid", p.pid),
        ("state", p.state),
        ("start time", _when(p.start_time) if text else int(p.start_time)),
        ("start since", int(now - p.start_time)),
        ("requests", p.requests),
        ("request duration", p.request_duration_us),
        ("request method", p.request_method or "-"),
        ("request URI" if text else "request uri", p.request_uri or "-"),
        ("content length", p.content_length),
        ("user", "-"),
        ("script", "-"),
        ("last request cpu", "0.00" if text else 0.0),
        ("last request memory", 0),
    ]


def render_text(status: PoolStatus, full: bool, now: float) -> str:
    """php-fpm's plain text layout: ``key:`` padded to 22 columns, then the value."""
    lines = []
    for key, attr in _POOL_KEYS:
        value = getattr(status, attr)
        if attr == "start_time":
            value = _when(value)
        lines.append(f"{key + ':':<22}{value}")
    if full:
        for proc in status.processes:
            lines.append("")
            lines.append("*" * 24)
            lines.extend(f"{k + ':':<22}{v}" for k, v in _process_items(proc, now, text=True))
    return "\n".join(lines) + "\n"


def render_json(status: PoolStatus, full: bool, now: float) -> str:
    """php-fpm's JSON: the text keys; times as Unix timestamps."""
    doc: dict[str, Any] = {}
    for key, attr in _POOL_KEYS:
        value = getattr(status, attr)
        doc[key] = int(value) if attr == "start_time" else value
    if full:
        doc["processes"] = [dict(_process_items(p, now, text=False)) for p in status.processes]
    return json.dumps(doc)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: OpenMetrics families: name (after ``phpfpm_``), type, PoolStatus attribute, help.
_METRICS = (
    ("accepted_connections", "counter", "accepted_conn",
     "The number of requests accepted by the pool."),
    ("listen_queue", "gauge", "listen_queue",
     "The number of requests in the queue of pending connections."),
    ("max_listen_queue", "gauge", "max_listen_queue",
     "The maximum number of requests in the queue of pending connections since the pool "
     "started."),
    ("listen_queue_length", "gauge", "listen_queue_len",
     "The size of the socket queue of pending connections."),
    ("idle_processes", "gauge", "idle_processes", "The number of idle processes."),
    ("active_processes", "gauge", "active_processes", "The number of active processes."),
    ("total_processes", "gauge", "total_processes", "The number of idle + active processes."),
    ("max_active_processes", "gauge", "max_active_processes",
     "The maximum number of active processes since the pool started."),
    ("max_children_reached", "counter", "max_children_reached",
     "The number of times the process limit has been reached, when pm tries to start more "
     "children (pm dynamic and ondemand)."),
    ("slow_requests", "counter", "slow_requests",
     "The number of requests that exceeded the slow-log timeout."),
)  # fmt: skip


def render_openmetrics(status: PoolStatus, full: bool, now: float) -> str:
    """OpenMetrics text (``# TYPE``, ``# HELP``, samples, ``# EOF``), php-fpm's metric names."""
    out = [
        "# TYPE phpfpm_up gauge",
        f"# HELP phpfpm_up Could pool {status.pool} using a {status.process_manager} PM "
        "be reached?",
        "phpfpm_up 1",
        "# TYPE phpfpm_start_since gauge",
        "# HELP phpfpm_start_since The number of seconds since the pool started.",
        f"phpfpm_start_since {status.start_since}",
    ]
    for name, kind, attr, text in _METRICS:
        suffix = "_total" if kind == "counter" else ""
        out.append(f"# TYPE phpfpm_{name} {kind}")
        out.append(f"# HELP phpfpm_{name} {text}")
        out.append(f"phpfpm_{name}{suffix} {getattr(status, attr)}")
    if full:
        rows = status.processes
        out.append("# TYPE phpfpm_process_state gauge")
        out.append("# HELP phpfpm_process_state The state of each process (1 for its state).")
        out.extend(
            f'phpfpm_process_state{{pid="{p.pid}",state="{_label(p.state)}"}} 1' for p in rows
        )
        out.append("# TYPE phpfpm_process_requests counter")
        out.append("# HELP phpfpm_process_requests The number of requests the process served.")
        out.extend(f'phpfpm_process_requests_total{{pid="{p.pid}"}} {p.requests}' for p in rows)
        out.append("# TYPE phpfpm_process_start_time_seconds gauge")
        out.append("# HELP phpfpm_process_start_time_seconds When the process started.")
        out.extend(
            f'phpfpm_process_start_time_seconds{{pid="{p.pid}"}} {p.start_time:.3f}' for p in rows
        )
        out.append("# TYPE phpfpm_process_request_duration_microseconds gauge")
        out.append(
            "# HELP phpfpm_process_request_duration_microseconds The duration of the current "
            "request, or of the last one when idle."
        )
        out.extend(
            f'phpfpm_process_request_duration_microseconds{{pid="{p.pid}"}} {p.request_duration_us}'
            for p in rows
        )
    out.append("# EOF")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- the endpoints
def _query_keys(params: Any) -> set[str]:
    query: bytes | None = params.get(b"QUERY_STRING")
    if query is None:
        query = (params.get(b"REQUEST_URI") or b"").partition(b"?")[2]
    return {part.partition(b"=")[0].decode("latin-1") for part in query.split(b"&") if part}


class StatusApp:
    """In front of the application: answers the status and ping paths, passes the rest on.

    It also keeps each worker's current/last request for ``?full`` (in the scoreboard when
    supervised), which costs a few microseconds per request only when it is configured.

    Args:
        app: the application.
        state: the server's state (counters, listeners, scoreboard slot when supervised).
    """

    def __init__(self, app: Application, state: ServerState) -> None:
        config = state.config
        self.app = app
        self.state = state
        self.status_path = config.status_path.encode() if config.status_path else None
        self.ping_path = config.ping_path.encode() if config.ping_path else None
        self.ping_response = config.ping_response.encode()
        self.started = time.time()
        self.max_listen_queue = 0
        #: This process's current or last request: start (monotonic), duration, method,
        #: URI, content length.
        self.last: tuple[float, float, bytes, bytes, int] = (0.0, 0.0, b"", b"", 0)

    async def startup(self) -> None:
        """The application's startup."""
        await self.app.startup()

    async def shutdown(self) -> None:
        """The application's shutdown."""
        await self.app.shutdown()

    # -------------------------------------------------------------------------- serving
    async def __call__(self, request: Request) -> None:
        """Answer the status or ping path; serve anything else with the application."""
        params = request.params
        path = request_path(params)
        if path == self.status_path or path == self.ping_path:
            entry = self._begin(params)
            try:
                if not self._allowed(request):
                    await self._answer(request, 403, TEXT_PLAIN, _FORBIDDEN, b"")
                elif path == self.ping_path:
                    no_cache = b"Cache-Control: no-cache\r\n"
                    await self._answer(request, 200, "text/plain", self.ping_response, no_cache)
                else:
                    ctype, body = self.render(_query_keys(params))
                    await self._answer(request, 200, ctype, body.encode(), _NO_CACHE)
            finally:
                self._finish(entry)
            return
        entry = self._begin(params)
        try:
            await self.app(request)
        finally:
            self._finish(entry)

    def _begin(self, params: Any) -> tuple[float, float, bytes, bytes, int]:
        """Publish a starting request as this process's current one; return its entry."""
        # The adapters' parser: a length they take as unknown (absent, -1, not digits) is 0.
        length = parse_length(params.get(b"CONTENT_LENGTH")) or 0
        method = params.get(b"REQUEST_METHOD") or b""
        uri = params.get(b"REQUEST_URI") or request_path(params)
        self.last = entry = (time.monotonic(), -1.0, method, uri, length)
        board = self.state.scoreboard_slot
        if board is not None:
            board[0].set_request(
                board[1],
                started_at=entry[0],
                duration=-1.0,
                content_length=length,
                slow_requests=self.state.slow_requests,
                method=method,
                uri=uri,
            )
        return entry

    def _finish(self, entry: tuple[float, float, bytes, bytes, int]) -> None:
        """A request ended: it becomes the last one, unless a newer one started meanwhile."""
        if self.last is not entry:
            return  # the row shows the newer request, still running
        started, _, method, uri, length = entry
        duration = time.monotonic() - started
        self.last = (started, duration, method, uri, length)
        board = self.state.scoreboard_slot
        if board is not None:
            board[0].set_request(
                board[1],
                started_at=started,
                duration=duration,
                content_length=length,
                slow_requests=self.state.slow_requests,
                method=method,
                uri=uri,
            )

    def _allowed(self, request: Request) -> bool:
        addr = request.params.get(b"REMOTE_ADDR")
        if addr:
            host = addr.decode("latin-1")
        else:
            peer: str = getattr(request, "peer", "")
            if not peer or peer.startswith("unix"):
                return True  # a local process on the unix socket, no web server in between
            host = peer.rpartition(":")[0].strip("[]")
        return host_allowed(host, self.state.allowed_networks or LOOPBACK)

    async def _answer(
        self, request: Request, status: int, ctype: str, body: bytes, extra: bytes
    ) -> None:
        reason = {200: "OK", 403: "Forbidden"}[status]
        head = (
            (
                f"Status: {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n"
            ).encode()
            + extra
            + b"\r\n"
        )
        if request.params.get(b"REQUEST_METHOD") == b"HEAD":
            body = b""
        await request.end(head + body)

    # ------------------------------------------------------------------------ the fields
    def render(self, options: set[str]) -> tuple[str, str]:
        """(content type, body) of the status page for the query ``options``."""
        now = time.time()
        status = self.collect(now)
        full = "full" in options
        if "openmetrics" in options:
            return OPENMETRICS, render_openmetrics(status, full, now)
        if "json" in options:
            return JSON, render_json(status, full, now)
        return TEXT_PLAIN, render_text(status, full, now)

    def sample(self) -> None:
        """Note the listen queue and active processes maxima (the server ticker calls this)."""
        queue, _ = listen_queue(self.state.listeners, self.state.config.backlog)
        self.max_listen_queue = max(self.max_listen_queue, queue)
        board = self.state.scoreboard_slot
        if board is not None:
            scoreboard = board[0]
            scoreboard.raise_pool_max("max_listen_queue", queue)
            active = 0
            for slot in range(scoreboard.slots):
                info = scoreboard.read(slot)
                if info.state == WorkerState.BUSY or (
                    info.state == WorkerState.DRAINING and info.active_requests
                ):
                    active += 1
            scoreboard.raise_pool_max("max_active_processes", active)

    def collect(self, now: float) -> PoolStatus:
        """The fields now: from the scoreboard when supervised, else from this process."""
        state = self.state
        config = state.config
        queue, queue_len = listen_queue(state.listeners, config.backlog)
        self.max_listen_queue = max(self.max_listen_queue, queue)
        board = state.scoreboard_slot
        if board is None:
            active = 1 if state.active_requests else 0
            started, duration, method, uri, length = self.last
            mono = time.monotonic()
            running = duration < 0
            row = ProcessStatus(
                pid=os.getpid(),
                state="Running" if active else "Idle",
                start_time=self.started,
                requests=state.total_requests,
                request_duration_us=int(((mono - started) if running else duration) * 1e6),
                request_method=method.decode("latin-1"),
                request_uri=uri.decode("utf-8", "replace"),
                content_length=length,
            )
            return PoolStatus(
                pool=config.pool_name,
                process_manager="static",
                start_time=self.started,
                start_since=int(now - self.started),
                accepted_conn=state.total_requests,
                listen_queue=queue,
                max_listen_queue=self.max_listen_queue,
                listen_queue_len=queue_len,
                idle_processes=1 - active,
                active_processes=active,
                total_processes=1,
                max_active_processes=1 if state.total_requests else 0,
                max_children_reached=0,
                slow_requests=state.slow_requests,
                processes=[row],
            )
        scoreboard = board[0]
        scoreboard.raise_pool_max("max_listen_queue", queue)
        mono = time.monotonic()
        rows = []
        idle = active = accepted = slow = 0
        for slot in range(scoreboard.slots):
            info = scoreboard.read(slot)
            if info.state == WorkerState.FREE or info.pid == 0:
                continue
            detail = scoreboard.request(slot)
            accepted += info.total_requests
            slow += detail.slow_requests
            if info.state == WorkerState.IDLE:
                idle += 1
            elif info.state == WorkerState.BUSY or (
                info.state == WorkerState.DRAINING and info.active_requests
            ):
                active += 1
            running = detail.duration < 0
            rows.append(
                ProcessStatus(
                    pid=info.pid,
                    state=STATE_NAMES.get(info.state, info.state.name.title()),
                    start_time=now - (mono - info.started_at),
                    requests=info.total_requests,
                    request_duration_us=int(
                        ((mono - detail.started_at) if running else detail.duration) * 1e6
                    )
                    if detail.started_at
                    else 0,
                    request_method=detail.method,
                    request_uri=detail.uri,
                    content_length=detail.content_length,
                )
            )
        scoreboard.raise_pool_max("max_active_processes", active)
        pool = scoreboard.pool()
        return PoolStatus(
            pool=config.pool_name,
            process_manager=config.pm,
            start_time=pool.start_time,
            start_since=int(now - pool.start_time),
            accepted_conn=pool.retired_requests + accepted,
            listen_queue=queue,
            max_listen_queue=max(pool.max_listen_queue, queue),
            listen_queue_len=queue_len,
            idle_processes=idle,
            active_processes=active,
            total_processes=idle + active,
            max_active_processes=max(pool.max_active_processes, active),
            max_children_reached=pool.max_children_reached,
            slow_requests=pool.retired_slow_requests + slow,
            processes=rows,
        )


__all__ = [
    "PoolStatus",
    "ProcessStatus",
    "StatusApp",
    "listen_queue",
    "render_json",
    "render_openmetrics",
    "render_text",
]
