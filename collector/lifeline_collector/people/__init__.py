"""People who use the collector's screens: accounts with roles, sessions, and the audit trail."""
