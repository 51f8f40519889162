"""Getting batches to the collector: the spool that holds them (``spool``), the shipper that sends
and deletes only what was acked (``shipper``) and the HTTP clients, one per way out (``transport``).
"""
