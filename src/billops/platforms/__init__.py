"""Billing platforms, each behind one small interface (base.py) with capability flags."""
