"""``POST /api/v1/ingest``: what agents send, from the HTTP request to the committed rows."""
