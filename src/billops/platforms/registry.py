"""Build the configured client for a platform (None when it has no credentials configured)."""

from __future__ import annotations

from billops.config import Settings
from billops.errors import ConfigError
from billops.platforms.base import PlatformClient

PLATFORMS = ("stripe",)
# Platforms whose webhooks BillOps ingests and decides on, but has no API client for yet: decisions are
# made from the webhook data (mirror) alone and nothing is executed on the platform.
INGEST_ONLY = ("chargebee",)


def missing_client_reason(platform: str) -> str:
    """Why `build_client` gave None, for decision notes and skipped actions."""
    if platform in INGEST_ONLY:
        return f"BillOps has no {platform} API client yet (webhooks only)"
    return f"no {platform} API key configured"


def build_client(platform: str, settings: Settings) -> PlatformClient | None:
    if platform == "stripe":
        if settings.stripe_api_key is None:
            return None
        from billops.platforms.stripe.client import StripePlatformClient

        return StripePlatformClient(settings.stripe_api_key.get_secret_value(), settings.stripe_api_base)
    if platform in INGEST_ONLY:
        return None
    raise ConfigError(f"unknown platform {platform!r}; supported: {', '.join(PLATFORMS)}")
