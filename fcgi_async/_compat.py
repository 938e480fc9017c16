"""What Python 3.10 lacks of the 3.11+ standard library, in one place.

Each name here is the standard library's own object on 3.11 and later (so 3.11+ behaves exactly
as if this module did not exist) and a faithful stand-in on 3.10. Nothing here is imported from
any other part of the package: every layer may import it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = [
    "WRITELINES_MAY_NOT_PAUSE",
    "pause_if_full",
    "run_with_loop",
    "timeout",
    "tomllib",
    "uncancel",
]

#: asyncio's selector transport on CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 never pauses its
#: protocol from ``writelines()`` (CPython gh-127655), so ``StreamWriter.drain()`` never waits:
#: a peer that reads slowly (or never) has everything written buffered in memory.
WRITELINES_MAY_NOT_PAUSE = (3, 12) <= sys.version_info < (3, 12, 9) or (
    (3, 13) <= sys.version_info < (3, 13, 2)
)


def pause_if_full(transport: asyncio.BaseTransport) -> None:
    """What ``writelines()`` should have done on the versions of
    :data:`WRITELINES_MAY_NOT_PAUSE`: pause the protocol when the write buffer is over its
    high-water mark. Only asyncio's own transports have the (private, stable since 3.4)
    method; uvloop's pause by themselves. Callers test the constant first, so 3.11 pays no call.
    """
    pause = getattr(transport, "_maybe_pause_protocol", None)
    if pause is not None:
        pause()


if sys.version_info >= (3, 11):
    from asyncio import timeout

    import tomllib

    def run_with_loop(
        main: Coroutine[Any, Any, _T],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    ) -> _T:
        """Run ``main`` to completion on a new loop from ``loop_factory`` (None: asyncio's).

        :class:`asyncio.Runner`: the loop's leftover tasks are cancelled, its async
        generators and default executor shut down, and the loop closed on the way out.
        """
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(main)

    def uncancel(task: asyncio.Task[Any]) -> None:
        """Withdraw one cancellation request of ``task`` (:meth:`asyncio.Task.uncancel`)."""
        task.uncancel()

else:  # pragma: no cover - Python 3.10 only; CI runs the suite on 3.10 (tests/run.sh)
    from types import TracebackType

    import async_timeout
    import tomli as tomllib

    class timeout:  # lower case: it stands in for the function asyncio.timeout
        """Cancel the block after ``delay`` seconds and raise the builtin TimeoutError.

        On 3.10 asyncio's TimeoutError is not yet the builtin one, and callers catch the
        builtin (as 3.11's :func:`asyncio.timeout` raises it). ``expired()`` tells whether this
        timeout (not some other cancellation) ended the block, as 3.11's does.
        """

        def __init__(self, delay: float | None) -> None:
            self._cm = async_timeout.timeout(delay)

        def expired(self) -> bool:
            """Whether the deadline passed and cancelled the block."""
            return bool(self._cm.expired)

        async def __aenter__(self) -> timeout:
            await self._cm.__aenter__()
            return self

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool | None:
            try:
                return await self._cm.__aexit__(exc_type, exc, tb)
            except asyncio.TimeoutError as err:
                raise TimeoutError from err

    def run_with_loop(
        main: Coroutine[Any, Any, _T],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    ) -> _T:
        """Run ``main`` to completion on a new loop, as 3.11's :class:`asyncio.Runner` does."""
        loop = asyncio.new_event_loop() if loop_factory is None else loop_factory()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(main)
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what ``main`` left running and wait for it, as :func:`asyncio.run` does."""
        tasks = asyncio.all_tasks(loop)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {
                        "message": "unhandled exception during shutdown",
                        "exception": task.exception(),
                        "task": task,
                    }
                )

    def uncancel(task: asyncio.Task[Any]) -> None:
        """Nothing to withdraw: 3.10's tasks do not count cancellation requests."""
