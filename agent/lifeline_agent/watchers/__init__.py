"""Long-lived watchers: kernel notifications (``netlink``) and what the agent does on each (``reactions``)."""
