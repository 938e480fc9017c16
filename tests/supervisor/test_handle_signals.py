"""handle_signals: the one wiring of a serving process's signals (runner.serve and every
supervised worker)."""

from __future__ import annotations

import asyncio
import os
import signal

from fcgi_async.runner import STOP_SIGNALS, handle_signals


async def test_stop_signals_set_the_event_and_the_handlers_come_off() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    remove = handle_signals(loop, stop)
    try:
        assert set(STOP_SIGNALS) == {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
        os.kill(os.getpid(), signal.SIGQUIT)
        await asyncio.wait_for(stop.wait(), 10)
    finally:
        remove()
    for sig in (*STOP_SIGNALS, signal.SIGUSR1):
        assert not loop.remove_signal_handler(sig)  # already removed
