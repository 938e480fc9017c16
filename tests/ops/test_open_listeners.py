"""open_listeners: the one place that chooses what a process serves (bound here, inherited,
or fd 0), for the single-process Server and the supervisor's parent alike."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fcgi_async.config import Config
from fcgi_async.server.listeners import close_listeners, open_listeners
from fcgi_async.supervisor import bind_listeners


def test_inherited_sockets_replace_the_default_bind() -> None:
    inherited = socket.socket()
    try:
        # The CLI's Config when no layer gave --bind (library code binds as told).
        config = Config(bind_explicit=False)
        assert open_listeners(config, [inherited]) == [inherited]
        assert bind_listeners(config, [inherited]) == [inherited]
    finally:
        inherited.close()


def test_an_explicit_bind_is_served_besides_the_inherited_and_its_file_recorded(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "app.sock")
    inherited = socket.socket()
    files: list[tuple[str, int]] = []
    config = Config(bind=(f"unix:{path}",), bind_explicit=True)
    sockets = open_listeners(config, [inherited], unix_files=files)
    try:
        assert sockets[0] is inherited
        assert len(sockets) == 2
        assert sockets[1].family == socket.AF_UNIX
        assert files == [(path, os.stat(path).st_ino)]
    finally:
        inherited.close()
        close_listeners(sockets[1:])
    assert not os.path.exists(path)
