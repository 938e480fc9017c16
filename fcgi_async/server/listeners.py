"""Listening sockets: ``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH``, ``fd://N``, fd 0, systemd.

Sockets are created here, before any event loop exists, so that a prefork supervisor can bind
in the parent and hand the same sockets to its workers (the hand-over itself is
:func:`fcgi_async.supervisor._hand_over`).

The listen backlog reaches inherited sockets too: asyncio and uvloop call ``listen(backlog)``
again on every socket they serve, which resizes the queue of an already listening socket.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import logging
import os
import pwd
import socket
import stat
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..config import Config

logger = logging.getLogger("fcgi_async.server")

#: FCGI_LISTENSOCK_FILENO: web servers that spawn us (mod_fcgid, lighttpd's bin-path,
#: spawn-fcgi) pass the listening socket as fd 0 (spec §2.2).
FCGI_LISTENSOCK_FILENO = 0
#: systemd socket activation (sd_listen_fds(3)): passed sockets start at fd 3.
SD_LISTEN_FDS_START = 3


#: The unix socket files this process created, by path: (st_dev, st_ino) of each, so that
#: :func:`close_listeners` removes a file only while it is still ours (another instance may
#: have replaced it once we stopped listening).
_CREATED: dict[str, tuple[int, int]] = {}


class BindError(OSError):
    """A bind address is malformed, in use, or not ours to take. The message says which."""


@dataclass(frozen=True, slots=True)
class BindAddress:
    """A parsed ``--bind`` value."""

    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(value: str) -> BindAddress:
    """Parse one bind string.

    Raises:
        BindError: the string is not one of the documented forms.
    """
    text = value.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise BindError(f"bad bind {value!r}: unix: needs a path, as in unix:/run/app.sock")
        return BindAddress("unix", path=path)
    if text.startswith("fd://"):
        try:
            fd = int(text[5:])
        except ValueError:
            raise BindError(f"bad bind {value!r}: fd:// needs a number, as in fd://3") from None
        if fd < 0:
            raise BindError(f"bad bind {value!r}: file descriptors are not negative")
        return BindAddress("fd", fd=fd)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise BindError(f"bad bind {value!r}: IPv6 addresses look like [::1]:9000")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise BindError(f"bad bind {value!r}: use HOST:PORT, [V6]:PORT, unix:PATH or fd://N")
    try:
        port_no = int(port)
    except ValueError:
        raise BindError(f"bad bind {value!r}: port {port!r} is not a number") from None
    if not 0 <= port_no <= 65535:
        raise BindError(f"bad bind {value!r}: port {port_no} is out of range")
    return BindAddress("tcp", host=host or "127.0.0.1", port=port_no)


def _unix_socket_is_live(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        # Refused or gone: stale. Permission denied, timeout...: someone owns it; keep off.
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def resolve_socket_owner(owner: str | None, group: str | None) -> tuple[int, int]:
    """Turn ``--socket-owner``/``--socket-group`` (names or numeric ids) into a uid and a gid.

    Returns:
        ``(uid, gid)`` for :func:`os.chown`; -1 for what is not given (left unchanged).

    Raises:
        BindError: a name is not a user or group on this system.
    """
    uid = gid = -1
    if owner is not None:
        if owner.isdigit():
            uid = int(owner)
        else:
            try:
                uid = pwd.getpwnam(owner).pw_uid
            except KeyError:
                raise BindError(f"socket owner {owner!r} is not a user on this system") from None
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise BindError(f"socket group {group!r} is not a group on this system") from None
    return uid, gid


def bind_socket(
    addr: BindAddress,
    *,
    backlog: int,
    socket_mode: int | None = None,
    socket_owner: str | None = None,
    socket_group: str | None = None,
) -> socket.socket:
    """Create, bind and listen on one socket.

    A unix socket path is replaced only when it is a stale socket (nobody accepts on it);
    a live socket or any other kind of file is an error. A unix socket file we create gets
    ``socket_owner``/``socket_group`` (names or numeric ids) and ``socket_mode`` before it
    listens, so no web server can connect while its permissions are still the umask's.

    Raises:
        BindError: the address is in use, not permitted, or otherwise unusable; the owner or
            group does not exist or we may not give the file to them.
    """
    if addr.kind == "fd":
        return adopt_fd(addr.fd)
    if addr.kind == "unix":
        uid, gid = resolve_socket_owner(socket_owner, socket_group)
        # Check-then-replace is a race between two instances started at the same moment: both
        # find the stale file, one binds, the other removes that fresh socket (it is not
        # listening yet, so it looks stale too) and binds its own. The directory lock makes the
        # check, the bind and the listen one step for every instance that takes it.
        with _directory_lock(addr.path):
            sock = _bind_unix(addr.path, uid, gid, socket_owner, socket_group, socket_mode, backlog)
        sock.setblocking(False)
        return sock
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(
            addr.host, addr.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {addr}: {exc.strerror}") from exc
    fam, _, _, _, sockaddr = infos[0]
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot bind {addr}: {reason or exc}") from exc
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _directory_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the directory of ``path`` (no lock file is left behind).

    A directory we may not open for reading is not locked: binding there still works, only
    without protection against an instance started at the same moment.
    """
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _bind_unix(
    path: str,
    uid: int,
    gid: int,
    socket_owner: str | None,
    socket_group: str | None,
    socket_mode: int | None,
    backlog: int,
) -> socket.socket:
    """:func:`bind_socket` for a unix path, called with the directory lock held."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a parent that is a file, no permission to look
        raise BindError(f"cannot bind unix:{path}: {exc.strerror or exc}") from exc
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise BindError(f"cannot bind unix:{path}: it exists and is not a socket")
        if _unix_socket_is_live(path):
            raise BindError(f"cannot bind unix:{path}: another server is listening on it")
        try:
            os.unlink(path)
        except OSError as exc:
            raise BindError(
                f"cannot bind unix:{path}: cannot remove the stale socket: {exc.strerror or exc}"
            ) from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind unix:{path}: {exc.strerror or exc}") from exc
    try:
        if uid != -1 or gid != -1:
            try:
                os.chown(path, uid, gid)
            except OSError as exc:
                who = (socket_owner or "") + (f":{socket_group}" if socket_group else "")
                raise BindError(
                    f"cannot give unix:{path} to {who} (--socket-owner/--socket-group): "
                    f"{exc.strerror or exc}"
                ) from exc
        if socket_mode is not None:
            os.chmod(path, socket_mode)
        st = os.stat(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(exc, BindError):
            raise
        raise BindError(f"cannot bind unix:{path}: {exc.strerror or exc}") from exc
    _CREATED[path] = (st.st_dev, st.st_ino)
    return sock


def adopt_fd(fd: int) -> socket.socket:
    """Wrap an inherited listening socket (``fd://N``, systemd, a supervisor's hand-over).

    Raises:
        BindError: the descriptor is not an open stream socket.
    """
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise BindError(f"fd://{fd} is not a socket")
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        if isinstance(exc, BindError):
            raise
        raise BindError(f"cannot use fd://{fd}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def detect_fd0_listener() -> socket.socket | None:
    """Return fd 0 as a listening socket when a web server handed us one, else ``None``.

    The FastCGI convention (spec §2.2): fd 0 is a socket, and ``getpeername`` fails with
    ENOTCONN because it listens rather than being connected.
    """
    try:
        if not stat.S_ISSOCK(os.fstat(FCGI_LISTENSOCK_FILENO).st_mode):
            return None
    except OSError:
        return None
    sock = socket.socket(fileno=os.dup(FCGI_LISTENSOCK_FILENO))
    try:
        sock.getpeername()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            sock.setblocking(False)
            return sock
    sock.close()
    return None


def open_listeners(
    config: Config,
    inherited: Sequence[socket.socket] = (),
    *,
    unix_files: list[tuple[str, int]] | None = None,
    log: logging.Logger = logger,
) -> list[socket.socket]:
    """The listening sockets to serve: bound here, or handed to this process.

    Without an explicit ``--bind``, the ``inherited`` sockets (systemd socket activation) or
    else a listening socket passed as fd 0 by the web server (spawn-fcgi, mod_fcgid) are used
    instead of the default bind; with one, ``inherited`` are served besides it. The one place
    that decides this, for the single-process Server and the supervisor's parent.

    Args:
        unix_files: when given, receives ``(path, inode)`` of every unix socket file bound
            here, so that the caller removes at shutdown only a file that is still its own.
        log: where the fd 0 hand-over is noted (the caller's logger).

    Raises:
        BindError: an address is malformed or cannot be bound; nothing stays bound.
    """
    explicit = config.bind_explicit
    if inherited and not explicit:
        return list(inherited)
    if not explicit:
        fd0 = detect_fd0_listener()
        if fd0 is not None:
            log.info("using the listening socket passed as fd 0 by the web server")
            return [fd0]
    sockets: list[socket.socket] = []
    files: list[tuple[str, int]] = []
    try:
        for value in config.bind:
            addr = parse_bind(value)
            sockets.append(
                bind_socket(
                    addr,
                    backlog=config.backlog,
                    socket_mode=config.socket_mode,
                    socket_owner=config.socket_owner,
                    socket_group=config.socket_group,
                )
            )
            if addr.kind == "unix":
                files.append((addr.path, os.stat(addr.path).st_ino))
    except BaseException:
        close_listeners(sockets)
        raise
    if unix_files is not None:
        unix_files.extend(files)
    return [*inherited, *sockets]


def systemd_listeners(
    environ: MutableMapping[str, str], *, backlog: int | None = None
) -> list[socket.socket]:
    """Take the listening sockets systemd passed (socket activation), as ``sd_listen_fds(3)``.

    When ``LISTEN_PID`` is this process's pid, ``LISTEN_FDS`` = N sockets are fds 3 .. 3+N-1
    (``LISTEN_FDNAMES`` names them; only logged). ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` are removed from ``environ`` in every case, so that child processes
    (workers, anything the app runs) never take them for their own. The descriptors are made
    close-on-exec. With ``backlog``, each listens again with that queue size at once (a
    supervisor that forks on demand accepts nothing itself, so its workers' ``listen`` may
    come late).

    Returns:
        The sockets, or an empty list when systemd passed none to this process.

    Raises:
        BindError: ``LISTEN_FDS`` is malformed, or a passed descriptor is not a listening
            stream socket (a ``.socket`` unit needs ``ListenStream=`` and ``Accept=no``).
    """
    pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    names = environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid.strip() != str(os.getpid()):
        return []
    try:
        n = int(count)
    except ValueError:
        raise BindError(f"LISTEN_FDS={count!r} from systemd is not a number") from None
    fd_names = names.split(":") if names else []
    sockets: list[socket.socket] = []
    try:
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n):
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    raise BindError(f"fd {fd} from systemd (LISTEN_FDS) is not a socket")
                os.set_inheritable(fd, False)
                sock = socket.socket(fileno=fd)
            except BindError:
                raise
            except OSError as exc:
                raise BindError(
                    f"fd {fd} from systemd (LISTEN_FDS): {exc.strerror or exc}"
                ) from exc
            sockets.append(sock)
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if sock.type != socket.SOCK_STREAM or not listening:
                raise BindError(
                    f"fd {fd} from systemd (LISTEN_FDS) is not a listening stream socket: "
                    "the .socket unit needs ListenStream= and Accept=no"
                )
            sock.setblocking(False)
            if backlog is not None:
                sock.listen(backlog)
            index = fd - SD_LISTEN_FDS_START
            name = fd_names[index] if index < len(fd_names) else ""
            logger.info(
                "using %s from systemd (fd %d%s)",
                describe(sock),
                fd,
                f", name {name!r}" if name else "",
            )
    except BaseException:
        for sock in sockets:
            sock.detach()
        raise
    return sockets


def describe(sock: socket.socket) -> str:
    """Return the address a socket listens on, in ``--bind`` syntax."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode()}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def close_listeners(sockets: list[socket.socket], *, unlink: bool = True) -> None:
    """Close sockets, removing the unix socket files we created."""
    for sock in sockets:
        path = None
        if unlink and sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                name = sock.getsockname()
                path = name if isinstance(name, str) and name else None
        sock.close()
        if path:
            _unlink_ours(path)


def _unlink_ours(path: str) -> None:
    """Remove the socket file at ``path`` if it is the one this process created.

    A path we did not create (an inherited socket) is left alone; so is one that another
    instance has bound anew since we stopped listening (it found ours stale).
    """
    created = _CREATED.pop(path, None)
    if created is None:
        return
    with _directory_lock(path):
        try:
            st = os.stat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
