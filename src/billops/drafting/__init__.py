"""Drafting: every text BillOps writes. This issue: versioned Jinja2 templates (deterministic, offline)."""
