"""Notifiers, one module each; importing this package registers every kind (the single list)."""

from lifeline_collector.notify import alertmanager, email, webhook
from lifeline_collector.notify.base import REGISTRY, Notifier, NotifierConfig, NotifyContext

__all__ = ["REGISTRY", "Notifier", "NotifierConfig", "NotifyContext", "alertmanager", "email", "webhook"]
