"""``POST /api/v1/ingest``: what agents send, from the HTTP request to the committed rows.

Rooms, in the order a request passes them:

- ``handler``: the HTTP side — token, bounded body, the decode chosen, the status codes;
- ``fast``: the hot-path decode of what a healthy agent sends (declines anything unusual);
- ``strict``: the wire's own decoder, whose errors name the field;
- ``admission``: what an agent may send — catalog metrics and labels, ``[limits]`` on events;
- ``pending``: a decoded request waiting for its commit;
- ``group_commit``: the requests of one event-loop pass share one transaction;
- ``commit``: one transaction for them, then the fleet view, counters and hooks;
- ``dedup``: a batch stored once per (agent, boot, seq), a replay answered "duplicate";
- ``plan``: what a stored sample changes in its series' latest state.
"""
