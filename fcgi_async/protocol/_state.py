"""The per-request input state machine, as one table (after h11's ``_state.py``).

A request's *input* moves PARAMS → STDIN → (DATA, FILTER role only) → INPUT_DONE; the role
decides the path. A stream record is looked up as ``(role, phase, record type, is_end)``, where
``is_end`` is true for the empty record that closes a stream (spec §3.3). A key absent from the
table is a protocol error. Output (STDOUT/STDERR, END_REQUEST) is ours and may start as soon as
the params are complete; the request leaves the table when we send END_REQUEST.
"""

from __future__ import annotations

import enum
from typing import Final

from .constants import DATA, PARAMS, STDIN, Role


class Phase(enum.IntEnum):
    """Which input stream a request expects next."""

    PARAMS = 1
    STDIN = 2
    DATA = 3
    INPUT_DONE = 4


TransitionKey = tuple[int, Phase, int, bool]

TRANSITIONS: Final[dict[TransitionKey, Phase]] = {
    # RESPONDER: params, then the body (spec §6.2).
    (Role.RESPONDER, Phase.PARAMS, PARAMS, False): Phase.PARAMS,
    (Role.RESPONDER, Phase.PARAMS, PARAMS, True): Phase.STDIN,
    (Role.RESPONDER, Phase.STDIN, STDIN, False): Phase.STDIN,
    (Role.RESPONDER, Phase.STDIN, STDIN, True): Phase.INPUT_DONE,
    # AUTHORIZER: params only (spec §6.3). Apache's mod_authnz_fcgi sends no STDIN at all;
    # other servers send an empty one, which is tolerated and ignored.
    (Role.AUTHORIZER, Phase.PARAMS, PARAMS, False): Phase.PARAMS,
    (Role.AUTHORIZER, Phase.PARAMS, PARAMS, True): Phase.INPUT_DONE,
    (Role.AUTHORIZER, Phase.INPUT_DONE, STDIN, False): Phase.INPUT_DONE,
    (Role.AUTHORIZER, Phase.INPUT_DONE, STDIN, True): Phase.INPUT_DONE,
    # FILTER: params, the body, then the file to filter as DATA (spec §6.4).
    (Role.FILTER, Phase.PARAMS, PARAMS, False): Phase.PARAMS,
    (Role.FILTER, Phase.PARAMS, PARAMS, True): Phase.STDIN,
    (Role.FILTER, Phase.STDIN, STDIN, False): Phase.STDIN,
    (Role.FILTER, Phase.STDIN, STDIN, True): Phase.DATA,
    (Role.FILTER, Phase.DATA, DATA, False): Phase.DATA,
    (Role.FILTER, Phase.DATA, DATA, True): Phase.INPUT_DONE,
}
