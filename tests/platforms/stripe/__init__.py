"""A package (not a rootdir module), so a conftest.py in here does not replace tests/conftest.py
as the importable `conftest` module (tests import helpers from it)."""
