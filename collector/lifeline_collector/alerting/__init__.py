"""Alerting: rules over the fleet view, a state machine, and stages feeding the notifiers."""
