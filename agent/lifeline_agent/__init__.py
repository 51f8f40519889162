"""Lifeline agent: probes every layer between a home dispatch laptop and CAD, spools, ships."""

__version__ = "0.1.0"
