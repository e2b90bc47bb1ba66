"""Build the configured client for a platform (None when it has no credentials configured)."""

from __future__ import annotations

from billops.config import Settings
from billops.errors import ConfigError
from billops.platforms.base import PlatformClient

PLATFORMS = ("stripe",)


def build_client(platform: str, settings: Settings) -> PlatformClient | None:
    if platform == "stripe":
        if settings.stripe_api_key is None:
            return None
        from billops.platforms.stripe.client import StripePlatformClient

        return StripePlatformClient(settings.stripe_api_key.get_secret_value(), settings.stripe_api_base)
    raise ConfigError(f"unknown platform {platform!r}; supported: {', '.join(PLATFORMS)}")
