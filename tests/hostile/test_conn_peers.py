"""A real fcgi-async process against raw-socket peers that misbehave at the connection level.

Each test starts its own server (memory freed by one attack would hide the next one's growth),
measures the worker's resident set from outside before and during the attack, and bounds its
traffic and its time. The margins are wide on purpose (a noisy 2-core CI machine): each bound
is several times what the fixed server uses and several times below what it used before.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from fcgi_async.protocol import ClientConnection
from fcgi_async.protocol.limits import DEFAULT_MAX_CONNECTION_BUFFER_BYTES
from tests.protocol.helpers import raw_record

from .conn_helpers import (
    MIB,
    flood,
    frame_request,
    non_reading_socket,
    read_answer,
    run_server,
    try_request,
    wait_for,
)

#: Growth of the worker's RSS that any attack below may cause (the fixed server stays within
#: a few MiB; the old one grew by 30 to 110 MiB under the same traffic).
RSS_MARGIN_KIB = 8 * 1024
#: The unknown-type flood's bound: one read (256 KiB, 32768 records) still becomes 32768 small
#: answers before reading pauses, ~2.5 MiB in flight; measured +4.4 MiB, the old server +44 MiB.
FLOOD_RSS_MAX_KIB = 16 * 1024


def test_a_non_reader_flooding_unknown_types_does_not_grow_the_worker(tmp_path: Path) -> None:
    """Every 8-byte unknown-type record is answered with 16 bytes; a peer that reads none of
    the answers used to be read on, and the answers buffered without bound."""
    with run_server(tmp_path) as server:
        before = server.rss_kib()
        sock = non_reading_socket(server.address)
        try:
            sent = flood(sock, raw_record(99, 0) * 8192)
            growth = server.peak_rss_kib() - before
        finally:
            sock.close()
    assert sent > 0
    assert growth < FLOOD_RSS_MAX_KIB, f"+{growth} KiB after {sent} bytes of unknown types"


def test_send_timeout_frees_the_slot_of_a_peer_that_never_reads(tmp_path: Path) -> None:
    """With one connection slot, a peer that asks for a big answer and reads none of it used
    to keep every other client out for minutes (its close waited for a flush forever)."""
    with run_server(
        tmp_path, "--max-connections", "1", "--keepalive-timeout", "2", "--send-timeout", "2"
    ) as server:
        hog = non_reading_socket(server.address)
        try:
            hog.sendall(frame_request(1, "/big"))
            start = time.monotonic()
            # The newcomer is refused while the hog holds the slot: try again until served.
            body = wait_for(
                lambda: try_request(server.address, "/after"), 20, "a new client served"
            )
            served_after = time.monotonic() - start
        finally:
            hog.close()
        assert body == b"/after hello"
        assert served_after < 12, f"served after {served_after:.1f} s"
        lines = server.wait_for_log("--send-timeout")
        assert len(lines) == 1, lines
        assert "127.0.0.1:" in lines[0]
        assert "output unread" in lines[0]


def test_unfinished_params_of_100_requests_stay_within_the_connection_budget(
    tmp_path: Path,
) -> None:
    """100 multiplexed requests with 256 KiB of unfinished params each were allowed: 25 MiB
    per connection. Now a connection holds at most --max-connection-buffer-bytes."""
    connections = 2
    with run_server(tmp_path) as server:
        before = server.rss_kib()
        socks = [socket.create_connection(server.address, timeout=10) for _ in range(connections)]
        try:
            for sock in socks:
                _hoard_params(sock, requests=100)
            growth = server.peak_rss_kib() - before
            bound_kib = connections * DEFAULT_MAX_CONNECTION_BUFFER_BYTES // 1024 + RSS_MARGIN_KIB
            assert growth < bound_kib, f"+{growth} KiB with {connections} hoarding connections"
        finally:
            for sock in socks:
                sock.close()
        closed = wait_for(
            lambda: len(server.log_lines("over --max-connection-buffer-bytes")) == connections,
            10,
            "one log line per closed connection",
        )
        assert closed


def _hoard_params(sock: socket.socket, requests: int) -> None:
    """Begin ``requests`` requests and send each almost 256 KiB of params, never ending them."""
    codec = ClientConnection()
    chunk = b"p" * 65535
    sock.settimeout(5)
    try:
        for rid in range(1, requests + 1):
            sock.sendall(codec.begin_request(rid))
            for _ in range(4):  # 4 x 65535 < 262144 (--max-params-bytes)
                sock.sendall(raw_record(4, rid, chunk, padding=1))
    except OSError:
        return  # closed by the server (or it stopped reading): the hoarding is over


def test_one_byte_body_records_are_charged_their_real_memory(tmp_path: Path) -> None:
    """1-byte STDIN records were kept as separate bytes objects while only their payload was
    counted: 1 MiB of them cost ~56 MiB."""
    connections = 2
    with run_server(tmp_path) as server:
        before = server.rss_kib()
        socks = [socket.create_connection(server.address, timeout=10) for _ in range(connections)]
        try:
            for sock in socks:
                sock.sendall(frame_request(1, "/hold", body=None))
                flood(sock, raw_record(5, 1, b"b", padding=7) * 8192, max_bytes=20 * MIB)
            growth = server.peak_rss_kib() - before
        finally:
            for sock in socks:
                sock.close()
    bound_kib = connections * DEFAULT_MAX_CONNECTION_BUFFER_BYTES // 1024 + RSS_MARGIN_KIB
    assert growth < bound_kib, f"+{growth} KiB with {connections} connections of 1-byte records"


def test_a_flood_of_refused_requests_logs_a_bounded_number_of_lines(tmp_path: Path) -> None:
    """Every refused BEGIN_REQUEST logged a WARNING: 10 MB of input wrote 50 MB of log."""
    refusals = 20_000
    batch = 1000
    begin_unknown_role = bytes((0, 9, 1, 0, 0, 0, 0, 0))  # role 9, FCGI_KEEP_CONN
    with run_server(tmp_path) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            for start in range(0, refusals, batch):
                sock.sendall(
                    b"".join(
                        raw_record(1, rid, begin_unknown_role)
                        for rid in range(start + 1, start + batch + 1)
                    )
                )
                _read_exactly(sock, 16 * batch)  # one END_REQUEST (16 bytes) per refusal
            # Every refusal is answered by now, and was logged before its answer was written.
            lines = server.log_lines("refused")
            assert len(lines) == 1, f"{len(lines)} lines, the first: {lines[:3]}"
        summary = server.wait_for_log("20000 refused requests")
    assert len(summary) == 1
    assert "UNKNOWN_ROLE: 20000" in summary[0]


def _read_exactly(sock: socket.socket, size: int) -> None:
    got = 0
    deadline = time.monotonic() + 10
    while got < size:
        assert time.monotonic() < deadline, f"{got} of {size} bytes of answers"
        data = sock.recv(size - got)
        assert data, "closed by the server"
        got += len(data)


def test_a_peer_that_half_closes_after_its_request_is_answered(tmp_path: Path) -> None:
    """socat sends the request, then shuts down its sending side: php-fpm answers it, and so
    do we (the app takes a moment, so the EOF arrives while it works)."""
    with run_server(tmp_path) as server, socket.create_connection(server.address) as sock:
        sock.sendall(frame_request(1, "/slow"))
        sock.shutdown(socket.SHUT_WR)
        body = read_answer(sock)
    assert body == b"/slow hello"
