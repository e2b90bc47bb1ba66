"""Stripe: webhook events and API objects normalized into the canonical model (normalize.py)."""
