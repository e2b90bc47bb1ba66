"""Governance: modes, approvals and the hash-chained audit trail."""
