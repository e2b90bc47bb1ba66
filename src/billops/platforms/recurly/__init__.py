"""Recurly: signed thin JSON webhooks (normalize.py: `thin_event`, then `enrich` through the API) and the
API v2021-02-25 client on the official SDK with at-most-once writes (client.py)."""
