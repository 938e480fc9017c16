"""``fcgi-async call ADDRESS PATH``: one FastCGI request from the command line.

In the spirit of ``cgi-fcgi`` and ``curl``: builds the params a web server would (see
:func:`fcgi_async.client.build_params`), sends the request, writes the body to stdout (``-i``
puts the status line and headers first) and the application's STDERR to stderr. Usable as a
Docker health check::

    HEALTHCHECK CMD fcgi-async call 127.0.0.1:9000 /ping || exit 1

Exit status (curl's numbers where curl has one):

==  ==========================================================================
0   the response arrived with a status below 400 (any status with ``--no-fail``)
1   a local problem: unreadable ``--data-file``, bad address
2   usage error
7   cannot connect (refused, no such socket)
8   FastCGI error: protocol error, connection lost, request rejected (OVERLOADED,
    CANT_MPX_CONN, UNKNOWN_ROLE), malformed CGI response
22  HTTP status 400 or above (the body is still printed)
28  timeout (``--timeout``, default 30 s for the whole exchange; ``--read-timeout``)
63  the response was too large: body past ``--max-filesize``, or a header block or
    STDERR past the client's limits (64 KiB, 64 MiB); the request is aborted
==  ==========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from typing import BinaryIO, Final

from .errors import ConnectError, FastCGIError, ResponseTooLarge, Timeout
from .params import build_params
from .pool import FastCGIClient, get_values
from .timeouts import DEFAULT_READ_TIMEOUT_S, Timeouts

EXIT_OK: Final = 0
EXIT_LOCAL: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECT: Final = 7
EXIT_FASTCGI: Final = 8
EXIT_HTTP: Final = 22
EXIT_TIMEOUT: Final = 28
EXIT_TOO_LARGE: Final = 63

#: Default seconds for the whole exchange: a health check must not hang.
DEFAULT_TIMEOUT_S: Final = 30.0

_SIZE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _seconds(text: str) -> float:
    """Parse a timeout: a finite number of seconds above zero (``nan``, ``inf``, ``-1`` and
    ``0`` are refused: none of them bounds a wait)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds > 0")
    return value


def _size(text: str) -> int:
    """Parse ``BYTES`` with an optional K, M or G suffix (powers of 1024, as curl does)."""
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    number = text[: len(text) - len(unit)]
    if unit not in _SIZE_UNITS or not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive size like 1048576 or 1M")
    return int(number) * _SIZE_UNITS[unit]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fcgi-async call",
        description="Send one FastCGI request and print the response (like cgi-fcgi or curl).",
        epilog=(
            "exit status: 0 ok, 1 local error, 2 usage, 7 cannot connect, 8 FastCGI error, "
            "22 HTTP status >= 400, 28 timeout, 63 response too large.  "
            "examples: fcgi-async call unix:/run/php/php8.2-fpm.sock /ping;  "
            "fcgi-async call 127.0.0.1:9000 /index.php --document-root /srv/www -d 'a=1'"
        ),
    )
    p.add_argument("address", help="unix:PATH, HOST:PORT or [IPV6]:PORT")
    p.add_argument("path", nargs="?", default="/", help="request target, /path?query (%(default)s)")
    p.add_argument("-X", "--request", dest="method", help="HTTP method (GET, POST with data)")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header, sent as HTTP_NAME (repeatable)",
    )
    p.add_argument("-d", "--data", help="request body; @FILE reads a file, @- reads stdin")
    p.add_argument(
        "--data-file", metavar="FILE", help="read the request body from FILE ('-' for stdin)"
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CGI param to add or override, e.g. SCRIPT_FILENAME=/srv/x.php (repeatable)",
    )
    p.add_argument("--script-filename", metavar="PATH", help="SCRIPT_FILENAME (run this script)")
    p.add_argument(
        "--document-root",
        metavar="DIR",
        help="DOCUMENT_ROOT; without --script-filename, SCRIPT_FILENAME is DIR + the script path",
    )
    p.add_argument(
        "--get-values", action="store_true", help="ask FCGI_MAX_CONNS/MAX_REQS/MPXS_CONNS"
    )
    p.add_argument(
        "-i", "--include", action="store_true", help="print the status line and headers too"
    )
    p.add_argument(
        "--no-fail", action="store_true", help="exit 0 on HTTP errors (status >= 400) too"
    )
    p.add_argument("-s", "--silent", action="store_true", help="no error messages or STDERR")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds for the whole exchange (%(default)s); exit status 28 when exceeded",
    )
    p.add_argument(
        "--read-timeout",
        type=_seconds,
        default=DEFAULT_READ_TIMEOUT_S,
        metavar="S",
        help=(
            "seconds of silence allowed while waiting for the next response bytes "
            "(%(default)s, bounded by --timeout); exit status 28 when exceeded"
        ),
    )
    p.add_argument(
        "--max-filesize",
        type=_size,
        metavar="BYTES",
        help=(
            "abort when the response body passes BYTES (K, M, G suffixes: 1024s), exit "
            "status 63, as curl's option; default no limit (the body streams to stdout). "
            "A header block over 64 KiB or STDERR over 64 MiB always aborts with 63"
        ),
    )
    return p


def _read_body(args: argparse.Namespace, stdin: BinaryIO) -> bytes | None:
    source: str | None = None
    if args.data_file is not None:
        source = args.data_file
    elif args.data is not None:
        if not args.data.startswith("@"):
            return str(args.data).encode()
        source = args.data[1:]
    if source is None:
        return None
    if source == "-":
        return stdin.read()
    with open(source, "rb") as f:
        return f.read()


async def _call(args: argparse.Namespace, body: bytes | None, out: BinaryIO, err: BinaryIO) -> int:
    headers: list[tuple[str, str]] = []
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {line!r}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    names = {name.lower() for name, _ in headers}
    if body is not None and "content-length" not in names:
        headers.append(("Content-Length", str(len(body))))
    if body is not None and "content-type" not in names:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    extra: dict[str, str | bytes | None] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"param {item!r}: expected NAME=VALUE")
        extra[name] = value
    method = args.method or ("POST" if body is not None else "GET")
    host = next((v for n, v in headers if n.lower() == "host"), "localhost")
    params = build_params(
        method,
        args.path,
        headers=headers,
        server_name=host.split(":")[0] or "localhost",
        script_filename=args.script_filename,
        document_root=args.document_root,
        extra=extra,
    )

    def on_stderr(data: bytes) -> None:
        if not args.silent:
            err.write(data)
            err.flush()

    timeouts = Timeouts(connect=min(args.timeout, 5.0), read=args.read_timeout, total=args.timeout)
    limit: int | None = args.max_filesize
    async with (
        FastCGIClient(
            args.address, multiplex=False, timeouts=timeouts, on_stderr=on_stderr
        ) as client,
        client.stream(params, body) as response,
    ):
        if args.include:
            head = [f"HTTP/1.1 {response.status_code} {response.reason}".rstrip()]
            head += [f"{name}: {value}" for name, value in response.headers]
            out.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if limit is not None and received > limit:
                # Leaving the block aborts the request (the connection is closed).
                raise ResponseTooLarge(
                    f"response body exceeds --max-filesize ({limit} bytes)", "body", limit
                )
            out.write(chunk)
        out.flush()
        status = response.status_code
    if status >= 400 and not args.no_fail:
        if not args.silent:
            err.write(f"fcgi-async call: HTTP status {status}\n".encode())
        return EXIT_HTTP
    return EXIT_OK


async def _values(args: argparse.Namespace, out: BinaryIO) -> int:
    values = await get_values(args.address, timeout=args.timeout)
    for name, value in values.items():
        out.write(f"{name}={value}\n".encode("latin-1"))
    out.flush()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fcgi-async call`` with ``argv`` (``sys.argv[2:]`` by default); return the status.

    Never raises for an expected failure and never calls ``sys.exit``: the exit status says
    what happened (see the module docstring). Must not be called from a running event loop.
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[2:] if argv is None else argv))
    except SystemExit as exc:  # argparse reports usage errors (and --help) by exiting
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = sys.stdout.buffer
    err = sys.stderr.buffer

    def fail(code: int, message: str) -> int:
        if not args.silent:
            err.write(f"fcgi-async call: {message}\n".encode())
            err.flush()
        return code

    try:
        if args.get_values:
            return asyncio.run(_values(args, out))
        body = _read_body(args, sys.stdin.buffer)
        return asyncio.run(_call(args, body, out, err))
    except OSError as exc:
        return fail(EXIT_LOCAL, str(exc))
    except ValueError as exc:
        return fail(EXIT_LOCAL, str(exc))
    except ConnectError as exc:
        return fail(EXIT_CONNECT, str(exc))
    except Timeout as exc:
        return fail(EXIT_TIMEOUT, str(exc))
    except ResponseTooLarge as exc:
        return fail(EXIT_TOO_LARGE, str(exc))
    except FastCGIError as exc:
        return fail(EXIT_FASTCGI, f"{type(exc).__name__}: {exc}")
