"""Build the configured client for a platform (None when it has no credentials configured)."""

from __future__ import annotations

from pydantic import SecretStr

from billops.config import Settings
from billops.errors import ConfigError
from billops.platforms.base import PlatformClient
from billops.store import Database

PLATFORMS = ("stripe", "chargebee", "recurly", "zuora")

_NEEDS = {
    "stripe": "BILLOPS_STRIPE_API_KEY",
    "chargebee": "BILLOPS_CHARGEBEE_SITE and BILLOPS_CHARGEBEE_API_KEY",
    "recurly": "BILLOPS_RECURLY_API_KEY",
    "zuora": "BILLOPS_ZUORA_API_URL, BILLOPS_ZUORA_CLIENT_ID and BILLOPS_ZUORA_CLIENT_SECRET",
}


def missing_client_reason(platform: str) -> str:
    """Why `build_client` gave None, for decision notes and skipped actions."""
    return f"no {platform} API credentials configured ({_NEEDS.get(platform, 'unknown platform')})"


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def build_client(platform: str, settings: Settings, db: Database) -> PlatformClient | None:
    """The platform's API client from the settings, or None when its credentials are not configured.
    `db` holds the at-most-once ledger of clients whose platform keeps no idempotency keys (Recurly)."""
    if platform == "stripe":
        if not _secret(settings.stripe_api_key):
            return None
        from billops.platforms.stripe.client import StripePlatformClient

        return StripePlatformClient(_secret(settings.stripe_api_key), settings.stripe_api_base)
    if platform == "chargebee":
        if not settings.chargebee_site or not _secret(settings.chargebee_api_key):
            return None
        from billops.platforms.chargebee.client import ChargebeePlatformClient

        return ChargebeePlatformClient(
            settings.chargebee_site, _secret(settings.chargebee_api_key), settings.chargebee_api_url
        )
    if platform == "recurly":
        if not _secret(settings.recurly_api_key):
            return None
        from billops.platforms.ledger import WriteLedger
        from billops.platforms.recurly.client import RecurlyPlatformClient

        return RecurlyPlatformClient(
            _secret(settings.recurly_api_key),
            region=settings.recurly_region,
            api_url=settings.recurly_api_url,
            ledger=WriteLedger(db),
        )
    if platform == "zuora":
        if not (
            settings.zuora_api_url and settings.zuora_client_id and _secret(settings.zuora_client_secret)
        ):
            return None
        from billops.platforms.zuora.client import ZuoraPlatformClient

        cpr = (
            (settings.zuora_cpr_username, _secret(settings.zuora_cpr_api_token))
            if settings.zuora_cpr_username and _secret(settings.zuora_cpr_api_token)
            else None
        )
        return ZuoraPlatformClient(
            settings.zuora_api_url,
            settings.zuora_client_id,
            _secret(settings.zuora_client_secret),
            retry_api_url=settings.zuora_cpr_url,
            retry_api_credentials=cpr,
            credit_charge_id=settings.zuora_credit_charge_id,
        )
    raise ConfigError(f"unknown platform {platform!r}; supported: {', '.join(PLATFORMS)}")
