"""BillOps: a governed decision layer for subscription billing operations."""

__version__ = "0.1.0"
