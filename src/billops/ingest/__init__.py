"""Webhook ingestion: verify, store once, normalize, start the workflow, answer."""
