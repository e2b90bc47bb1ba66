"""Zuora: callout bodies (BillOps' documented templates) and REST/Object Query JSON normalized into the
canonical model (normalize.py), and the `PlatformClient` on httpx with OAuth client credentials
(client.py). Callout authentication lives in `billops.ingest.zuora`."""
