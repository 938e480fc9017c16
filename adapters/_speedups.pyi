from collections.abc import Mapping

def scope_parts(
    params: Mapping[bytes, bytes],
    names: Mapping[bytes, bytes | None],
    content_headers: frozenset[bytes],
    /,
) -> (
    tuple[list[tuple[bytes, bytes]], tuple[str, int] | None, tuple[str, int | None] | None] | None
): ...
