"""Remote-write of stored samples to Prometheus or a compatible TSDB, with their original timestamps.

The collector stores every sample first and then hands it here. Rooms, one job each:

- ``config``: the ``[remote_write]`` table;
- ``prompb``: the remote-write 1.0 messages, their encoding (snappy protobuf) and headers;
- ``sender``: one receiver, the spec's retry and split rules, the ``lifeline_remote_write_*``
  counters;
- ``in_memory``: ``RemoteWriter``, fed by ingest through a bounded queue (drops the oldest when
  full; the store keeps them);
- ``durable``: ``DurableRemoteWriter``, which reads the store after a saved cursor, so a restart
  resends from the store.
"""
