"""Chargebee: v2 webhook events normalized into the canonical model (normalize.py)."""
