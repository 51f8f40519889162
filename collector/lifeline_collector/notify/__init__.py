"""Lifeline."""
