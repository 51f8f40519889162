"""Long-lived watchers: kernel notifications that trigger immediate re-probes (see ``netlink``)."""
