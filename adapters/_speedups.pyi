from collections.abc import Mapping
from typing import Any

def http_scope(
    params: Mapping[bytes, bytes],
    root_path: bytes | None,
    state: dict[str, Any],
    names: dict[bytes, bytes | None],
    /,
) -> dict[str, Any] | None: ...
def response_head(
    status: object, headers: object, status_lines: dict[int, bytes], /
) -> bytes | None: ...
