"""The mirror: a local copy of customers, subscriptions, invoices, attempts and payment methods."""

from billops.mirror.store import Mirror

__all__ = ["Mirror"]
