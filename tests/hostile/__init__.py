"""Hostile and broken peers against real servers and clients, bounded in traffic and time.

Where each finding of the hostile-peer review is covered:

1. a peer that never reads is not read either: ``test_conn_peers`` (unknown-type flood);
2. the send deadline frees a non-reader's slot: ``test_conn_peers`` (``--send-timeout``);
3. one memory budget per connection: ``test_conn_peers`` (100 requests of unfinished params);
4. body chunks charged their real memory: ``test_conn_peers`` (1-byte STDIN records);
5. refusals logged once plus a summary: ``test_conn_peers`` (refused BEGIN_REQUEST flood);
6. and 7. NaN timeouts and limits past their ceiling: ``test_cfg_startup``;
8. an ASGI body of the wrong type is a 500: ``test_adapters_front_ends``;
9. one CONTENT_LENGTH parser: ``test_adapters_front_ends``; the status bookkeeping with
   ``--workers 2``: ``tests/ops/test_status.py``
   (``test_any_content_length_is_served_and_shown_as_the_adapters_parse_it``);
10. log forging: ``test_adapters_logs``;
11. the client's timeouts and size caps: ``test_client_limits`` (and ``test_phpapp_faults`` for
    the proxy app);
12. half-close: ``test_conn_peers``; two instances on one unix path:
    ``test_cfg_unix_bind_race``; IPv4-mapped allowed clients: ``test_cfg_startup``;
13. HEAD without a body and Caddy's ``CONTENT_LENGTH=-1``: ``test_adapters_front_ends``;
14. a client that vanishes mid-stream: ``test_adapters_vanishing`` and ``test_adapters_sends``
    (also run on Python 3.13 by ``tests/run.sh``).
"""
