"""The supervisor's screen: the live board, each position's page, acting on alerts, the audit page."""
