"""Getting batches to the collector: the spool that holds them (``spool``), the shipper that sends
them and deletes only what was acked (``shipper``), the choice of endpoint and way out
(``paths``) and the HTTP clients, one per way out (``transport``).
"""
