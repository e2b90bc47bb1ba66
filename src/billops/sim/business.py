"""A synthetic subscription business: customers, cards, plans, renewals, declines and recoveries.

Everything is drawn from seeded `random.Random` instances (one per customer, derived from the
seed and the customer's index), so the same (seed, customers, days, now) always gives the same
business, and adding customers never changes the ones already drawn. Ids are derived from the seed
and a per-customer counter, not from the clock, so re-running with the same seed reproduces the
same ids (the demo uses that to show deduplication).

Money is integer minor units. Times are timezone-aware UTC. The business only knows what happened
up to `now`: a retry planned after `now` shows up as the invoice's `next_payment_attempt`, nothing more.
"""

from __future__ import annotations

import calendar
import hashlib
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from billops.domain.billing import Decline
from billops.domain.declines import load_taxonomy

# ------------------------------------------------------------------ catalogue and populations

MONTHLY_PRICE = {  # minor units per currency; a yearly plan costs 10 months
    "Starter": {"usd": 1900, "eur": 1900, "gbp": 1600},
    "Team": {"usd": 7900, "eur": 7900, "gbp": 6900},
    "Business": {"usd": 24900, "eur": 24900, "gbp": 21900},
    "Enterprise": {"usd": 120000, "eur": 120000, "gbp": 100000},
}
PLAN_SHARE = {"Starter": 50, "Team": 30, "Business": 15, "Enterprise": 5}
YEARLY_SHARE = {"Starter": 0.12, "Team": 0.15, "Business": 0.2, "Enterprise": 0.5}

# country -> (weight, currency, timezones)
COUNTRIES: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "US": (45, "usd", ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")),
    "CA": (5, "usd", ("America/Toronto", "America/Vancouver")),
    "GB": (10, "gbp", ("Europe/London",)),
    "DE": (8, "eur", ("Europe/Berlin",)),
    "FR": (6, "eur", ("Europe/Paris",)),
    "NL": (3, "eur", ("Europe/Amsterdam",)),
    "ES": (3, "eur", ("Europe/Madrid",)),
    "IE": (2, "eur", ("Europe/Dublin",)),
    "AU": (4, "usd", ("Australia/Sydney", "Australia/Perth")),
    "IN": (4, "usd", ("Asia/Kolkata",)),
    "BR": (3, "usd", ("America/Sao_Paulo",)),
    "MX": (3, "usd", ("America/Mexico_City",)),
    "JP": (2, "usd", ("Asia/Tokyo",)),
    "SG": (2, "usd", ("Asia/Singapore",)),
}
BRAND_SHARE = {"visa": 55, "mastercard": 33, "amex": 12}
FUNDING_SHARE = {"credit": 60, "debit": 35, "prepaid": 5}
FAILURE_RATE = {"credit": 0.075, "debit": 0.11, "prepaid": 0.25}  # ~9.6% of renewals overall

# fmt: off
# Decline codes of failed renewals (Stripe decline_code vocabulary), weights in percent.
DECLINE_MIX: dict[str, float] = {
    "insufficient_funds": 40, "generic_decline": 15, "do_not_honor": 10, "expired_card": 10,
    "card_velocity_exceeded": 3, "processing_error": 4, "try_again_later": 3, "incorrect_cvc": 3,
    "lost_card": 1.2, "stolen_card": 0.8, "fraudulent": 1.2, "pickup_card": 0.8,  # 4% lost/stolen/fraud
    "withdrawal_count_limit_exceeded": 1.5, "transaction_not_allowed": 1.5, "card_not_supported": 1,
    "restricted_card": 1, "call_issuer": 1, "issuer_not_available": 1, "invalid_account": 0.5,
    "authentication_required": 0.5,
}
# Visa response codes that go with a decline code (outcome.network_decline_code).
VISA_CODES = {
    "insufficient_funds": ["51"], "generic_decline": ["05"], "do_not_honor": ["05"], "expired_card": ["54"],
    "card_velocity_exceeded": ["61", "65"], "processing_error": ["96"], "try_again_later": ["91"],
    "incorrect_cvc": ["N7"], "lost_card": ["41"], "stolen_card": ["43"], "pickup_card": ["04", "07"],
    "transaction_not_allowed": ["57"], "restricted_card": ["62"], "invalid_account": ["46"],
    "withdrawal_count_limit_exceeded": ["65"], "issuer_not_available": ["91"], "call_issuer": ["01"],
}
# fmt: on
# charge.failure_code is `card_declined` except for these (Stripe error codes that equal the decline code).
OWN_FAILURE_CODE = {"expired_card", "incorrect_cvc", "processing_error", "authentication_required"}
HARD_MACS = ["03", "21"]
SOFT_MACS = ["02", "24", "25", "26", "27", "28", "29", "30"]
SMART_RETRY_DAYS = (2.0, 5.0, 9.0, 14.0)  # the platform's own retries after the first failure

_FIRST = (
    "Ada Alan Amara Ana Arjun Bea Carlos Chen Chloe Daniel Dara Elena Emeka Emma Farah Felix Grace Hana "
    "Hugo Ines Ivan Jade Jonas Kai Keiko Lars Leila Liam Lucia Mateo Maya Mei Nadia Noah Olga Omar Priya "
    "Rafael Rosa Sami Sara Sofia Tariq Tom Uma Victor Wei Yara Yusuf Zoe"
)
_LAST = (
    "Abara Becker Bianchi Costa Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kaur Kim Kowalski Lopez "
    "Martin Meyer Moreau Murphy Nakamura Novak Okafor Olsen Patel Pereira Quinn Rossi Sato Schmidt Silva "
    "Singh Smith Suzuki Tanaka Turner Walsh Wang Weber Williams Yilmaz Zhang"
)
FIRST_NAMES, LAST_NAMES = _FIRST.split(), _LAST.split()

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def make_id(prefix: str, *parts: object, length: int = 24) -> str:
    """A Stripe-looking id (`cus_…`) derived from its parts: same parts, same id."""
    n = int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest(), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_B62[r])
    return f"{prefix}_{''.join(chars)}"


def add_months(t: datetime, months: int) -> datetime:
    """Same day and time `months` later, clamped to the month's last day (Stripe's billing anchor rule)."""
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def month_end(year: int, month: int) -> datetime:
    """The last second a card expiring in (month, year) is valid."""
    return datetime(year, month, calendar.monthrange(year, month)[1], 23, 59, 59, tzinfo=UTC)


# ------------------------------------------------------------------ the business's objects


@dataclass(frozen=True)
class Plan:
    price_id: str
    product_id: str
    name: str
    amount: int  # minor units
    currency: str
    interval: Literal["month", "year"]


@dataclass(frozen=True)
class Card:
    """One version of a stored card. An automatic update keeps the id and changes exp (and maybe last4)."""

    id: str  # pm_…
    brand: str
    funding: str
    country: str
    exp_month: int
    exp_year: int
    last4: str
    fingerprint: str
    created: datetime

    def expires_at(self) -> datetime:
        return month_end(self.exp_year, self.exp_month)


@dataclass(frozen=True)
class DeclineSpec:
    """Why a charge failed, as Stripe reports it."""

    code: str  # outcome.reason / last_payment_error.decline_code
    failure_code: str  # charge.failure_code / last_payment_error.code
    network: str  # the card brand: visa, mastercard, amex
    advice_code: str | None = None
    network_advice_code: str | None = None  # Mastercard MAC
    network_decline_code: str | None = None  # Visa response code
    risk_level: str = "normal"

    @property
    def category(self) -> str:
        """The canonical category BillOps' taxonomy gives these signals."""
        return self.classify().category.value

    def classify(self) -> Decline:
        return load_taxonomy().classify(
            self.code,
            advice_code=self.advice_code,
            network_advice_code=self.network_advice_code,
            network_decline_code=self.network_decline_code,
            network=self.network,
        )


@dataclass(frozen=True)
class Attempt:
    id: str  # ch_…
    at: datetime
    card: Card
    decline: DeclineSpec | None  # None: succeeded

    @property
    def succeeded(self) -> bool:
        return self.decline is None


@dataclass
class Customer:
    index: int
    id: str
    name: str
    email: str
    created: datetime
    country: str
    timezone: str
    currency: str
    invoice_prefix: str
    card: Card  # the card at signup


@dataclass
class Subscription:
    id: str
    item_id: str
    customer: Customer
    plan: Plan
    start: datetime  # billing cycle anchor

    def renewal(self, k: int) -> datetime:
        return add_months(self.start, k * (12 if self.plan.interval == "year" else 1))


@dataclass
class Invoice:
    id: str
    number: str
    payment_intent_id: str
    invoice_payment_id: str
    subscription: Subscription
    billing_reason: str  # subscription_create | subscription_cycle
    created: datetime  # invoice.created (draft)
    finalized: datetime  # invoice.finalized, first attempt right after
    period: tuple[datetime, datetime]  # the service period of its line (renewal .. next renewal)
    attempts: list[Attempt] = field(default_factory=list)
    next_attempts: list[datetime | None] = field(default_factory=list)  # after attempt i, the platform's plan

    @property
    def amount(self) -> int:
        return self.subscription.plan.amount

    @property
    def currency(self) -> str:
        return self.subscription.plan.currency

    @property
    def customer(self) -> Customer:
        return self.subscription.customer

    @property
    def paid(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].succeeded

    @property
    def failed_first(self) -> bool:
        return bool(self.attempts) and not self.attempts[0].succeeded


HappeningKind = Literal[
    "signup",  # customer.created, payment_method.attached, customer.subscription.created
    "invoice_created",
    "invoice_finalized",
    "attempt",  # charge + payment_intent + invoice events for invoice.attempts[index]
    "card_update",  # payment_method.attached | updated | automatically_updated
    "subscription_status",  # customer.subscription.updated
]


@dataclass(frozen=True)
class Happening:
    at: datetime
    kind: HappeningKind
    customer: Customer
    subscription: Subscription
    invoice: Invoice | None = None
    index: int = 0  # attempt index for "attempt"
    card: Card | None = None  # the (new) card for card_update / the default card otherwise
    old_card: Card | None = None  # for card_update
    how: str = ""  # card_update: attached | updated | automatically_updated
    status: str = ""  # subscription_status: new status
    previous_status: str = ""


@dataclass
class Business:
    seed: int
    now: datetime
    window_start: datetime
    plans: list[Plan]
    customers: list[Customer]
    subscriptions: list[Subscription]
    invoices: list[Invoice]
    happenings: list[Happening]  # chronological

    @property
    def renewals(self) -> list[Invoice]:
        """Invoices of renewals inside the window (signup invoices excluded)."""
        return [i for i in self.invoices if i.billing_reason == "subscription_cycle"]

    def failed_renewals(self) -> list[Invoice]:
        return [i for i in self.renewals if i.failed_first]


# ------------------------------------------------------------------ generation


def _plans(seed: int) -> list[Plan]:
    plans = []
    for name, prices in MONTHLY_PRICE.items():
        product = make_id("prod", "product", name, length=14)
        for interval in ("month", "year"):
            for currency, monthly in prices.items():
                amount = monthly * (10 if interval == "year" else 1)
                pid = make_id("price", "price", name, interval, currency, length=24)
                plans.append(Plan(pid, product, name, amount, currency, interval))  # type: ignore[arg-type]
    return plans


def _weighted(rng: random.Random, table: dict[str, float] | dict[str, int]) -> str:
    keys = list(table)
    return rng.choices(keys, weights=[table[k] for k in keys])[0]


class _CustomerDraw:
    """Draws one customer's life inside the window with its own random stream and id namespace."""

    def __init__(self, seed: int, index: int, now: datetime, window_start: datetime, plans: list[Plan]):
        self.rng = random.Random(f"billops-sim:{seed}:{index}")
        self.seed, self.index, self.now, self.window_start = seed, index, now, window_start
        self.plans = plans
        self.counter = 0
        self.happenings: list[Happening] = []
        self.invoices: list[Invoice] = []

    def id(self, prefix: str, length: int = 24) -> str:
        self.counter += 1
        return make_id(prefix, self.seed, self.index, prefix, self.counter, length=length)

    def card(self, country: str, created: datetime, brand: str | None = None) -> Card:
        rng = self.rng
        brand = brand or _weighted(rng, BRAND_SHARE)
        funding = "credit" if brand == "amex" and rng.random() < 0.95 else _weighted(rng, FUNDING_SHARE)
        if rng.random() < 0.06:  # foreign-issued card
            country = rng.choice([c for c in COUNTRIES if c != country])
        # Most cards expire well after the window; ~7% expire inside it, ~5% soon after it.
        r = rng.random()
        if r < 0.07:
            exp = self.window_start + timedelta(days=rng.uniform(0, (self.now - self.window_start).days))
        elif r < 0.12:
            exp = self.now + timedelta(days=rng.uniform(5, 75))
        else:
            exp = self.now + timedelta(days=rng.uniform(75, 5 * 365))
        exp = max(exp, created + timedelta(days=40))
        last4 = f"{rng.randrange(10000):04d}"
        fingerprint = make_id("fp", self.seed, self.index, "card", self.counter, length=16)[3:]
        return Card(self.id("pm"), brand, funding, country, exp.month, exp.year, last4, fingerprint, created)

    def renewed_card(self, card: Card, at: datetime) -> Card:
        """What the card updater (or the customer editing the expiry) produces: same id, new expiry."""
        year = at.year + self.rng.randint(3, 5)
        if self.rng.random() < 0.7:
            return replace(card, exp_year=year)
        fingerprint = make_id("fp", self.seed, self.index, at, length=16)[3:]
        return replace(card, exp_year=year, last4=f"{self.rng.randrange(10000):04d}", fingerprint=fingerprint)

    def decline(self, card: Card, code: str | None = None) -> DeclineSpec:
        rng = self.rng
        code = code or _weighted(rng, DECLINE_MIX)
        failure_code = code if code in OWN_FAILURE_CODE else "card_declined"
        category = load_taxonomy().classify(code).category.value
        advice = None
        if category == "hard" and rng.random() < 0.7:
            advice = "do_not_try_again"
        elif category == "needs_new_card" and rng.random() < 0.6:
            advice = "confirm_card_data"
        elif rng.random() < {
            "processing_error": 0.7,
            "try_again_later": 0.7,
            "issuer_not_available": 0.7,
            "insufficient_funds": 0.3,
        }.get(code, 0):
            advice = "try_again_later"
        mac = ndc = None
        if card.brand == "mastercard" and rng.random() < 0.35:
            if category == "hard":
                mac = rng.choice(HARD_MACS)
            elif code == "expired_card":
                mac = "01"
            elif category != "needs_new_card":
                mac = rng.choice(SOFT_MACS) if rng.random() < 0.9 else "21"
        if card.brand == "visa" and code in VISA_CODES and rng.random() < 0.5:
            ndc = rng.choice(VISA_CODES[code])
        risk = "elevated" if code in ("fraudulent", "stolen_card") and rng.random() < 0.5 else "normal"
        return DeclineSpec(code, failure_code, card.brand, advice, mac, ndc, risk)

    # -------------------------------------------------------------- one customer

    def draw(self) -> tuple[Customer, Subscription]:
        rng, now = self.rng, self.now
        country = _weighted(rng, {k: v[0] for k, v in COUNTRIES.items()})
        _, currency, zones = COUNTRIES[country]
        created = now - timedelta(seconds=rng.uniform(3600, 3 * 365 * 86400))
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        customer = Customer(
            index=self.index,
            id=self.id("cus", 14),
            name=f"{first} {last}",
            email=f"{first}.{last}{self.index}@example.{rng.choice(['com', 'org', 'net'])}".lower(),
            created=created,
            country=country,
            timezone=rng.choice(zones),
            currency=currency,
            invoice_prefix=make_id("", self.seed, self.index, "prefix", length=8)[1:].upper(),
            card=self.card(country, created),
        )
        name = _weighted(rng, PLAN_SHARE)
        interval = "year" if rng.random() < YEARLY_SHARE[name] else "month"
        plan = next(p for p in self.plans if (p.name, p.interval, p.currency) == (name, interval, currency))
        start = created + timedelta(seconds=rng.uniform(5, 600))
        sub = Subscription(self.id("sub", 24), self.id("si", 14), customer, plan, start)
        self.happenings.append(Happening(created, "signup", customer, sub, card=customer.card))
        self._renewals(sub)
        return customer, sub

    def _renewals(self, sub: Subscription) -> None:
        rng, customer = self.rng, sub.customer
        card = customer.card
        seq = 0
        k = 0  # a signup inside the window: its first invoice is in the window too
        if sub.start <= self.window_start:
            k = 1
            while sub.renewal(k) <= self.window_start:
                k += 1
        while True:
            at = sub.renewal(k)
            if at + timedelta(hours=1) > self.now:
                return
            seq += 1
            first_invoice = k == 0
            decline: DeclineSpec | None = None
            if not first_invoice:
                if card.expires_at() < at:
                    # The card expired since the last charge: usually the card updater renewed it first.
                    if rng.random() < 0.85:
                        upd = at - timedelta(
                            seconds=rng.uniform(3600, max(3601, (at - card.expires_at()).total_seconds()))
                        )
                        new = self.renewed_card(card, upd)
                        self._card_update(sub, upd, card, new, "automatically_updated")
                        card = new
                    else:
                        decline = self.decline(card, "expired_card")
                elif rng.random() < FAILURE_RATE[card.funding]:
                    decline = self.decline(card)
                    if decline.code == "expired_card":
                        if card is customer.card and (at.year, at.month) > (
                            card.created.year,
                            card.created.month,
                        ):
                            # Make the card really expired: valid through the month before this renewal.
                            prev = add_months(at, -1)
                            card = self._replace_card(
                                card, replace(card, exp_month=prev.month, exp_year=prev.year)
                            )
                            customer.card = card
                        else:
                            decline = self.decline(card, "generic_decline")
            created_at = at
            finalized = at + (timedelta(seconds=2) if first_invoice else timedelta(hours=1))
            inv = Invoice(
                id=self.id("in", 24),
                number=f"{customer.invoice_prefix}-{seq:04d}",
                payment_intent_id=self.id("pi", 24),
                invoice_payment_id=self.id("inpay", 24),
                subscription=sub,
                billing_reason="subscription_create" if first_invoice else "subscription_cycle",
                created=created_at,
                finalized=finalized,
                period=(at, sub.renewal(k + 1)),
            )
            self.invoices.append(inv)
            self.happenings.append(Happening(created_at, "invoice_created", customer, sub, inv, card=card))
            self.happenings.append(Happening(finalized, "invoice_finalized", customer, sub, inv, card=card))
            first_try = finalized + timedelta(seconds=rng.uniform(5, 120))
            self._attempt(sub, inv, first_try, card, decline)
            if decline is None:
                k += 1
                continue
            recovered_card = self._recover(sub, inv, card, decline)
            if recovered_card is None:  # still unpaid: no further renewals for a past-due subscription here
                return
            card = recovered_card
            k += 1

    def _attempt(
        self, sub: Subscription, inv: Invoice, at: datetime, card: Card, d: DeclineSpec | None
    ) -> None:
        inv.attempts.append(Attempt(self.id("ch", 24), at, card, d))
        inv.next_attempts.append(None)
        self.happenings.append(
            Happening(at, "attempt", sub.customer, sub, inv, index=len(inv.attempts) - 1, card=card)
        )

    def _replace_card(self, old: Card, new: Card) -> Card:
        """Swap one card version for another everywhere it was already used (expiry chosen after the fact)."""
        self.happenings = [
            replace(
                h, card=new if h.card == old else h.card, old_card=new if h.old_card == old else h.old_card
            )
            for h in self.happenings
        ]
        for inv in self.invoices:
            inv.attempts = [replace(a, card=new) if a.card == old else a for a in inv.attempts]
        return new

    def _card_update(self, sub: Subscription, at: datetime, old: Card, new: Card, how: str) -> None:
        self.happenings.append(
            Happening(at, "card_update", sub.customer, sub, card=new, old_card=old, how=how)
        )

    def _status(self, sub: Subscription, at: datetime, status: str, previous: str, inv: Invoice) -> None:
        self.happenings.append(
            Happening(
                at, "subscription_status", sub.customer, sub, inv, status=status, previous_status=previous
            )
        )

    def _recover(self, sub: Subscription, inv: Invoice, card: Card, decline: DeclineSpec) -> Card | None:
        """Play out what follows a failed renewal up to `now`. Returns the card that paid, or None."""
        rng, now = self.rng, self.now
        t0 = inv.attempts[0].at
        self._status(sub, t0 + timedelta(seconds=3), "past_due", "active", inv)
        category = decline.category
        plan = (
            []
            if category == "hard"
            else [t0 + timedelta(days=d, hours=rng.uniform(-12, 12)) for d in SMART_RETRY_DAYS]
        )
        # How (and whether) this invoice gets paid.
        path = "none"
        if rng.random() < {"hard": 0.3, "needs_new_card": 0.6, "try_later": 0.75, "soft": 0.55}[category]:
            if category in ("hard", "needs_new_card"):
                path = "new_card"
                if decline.code == "expired_card":
                    path = rng.choices(["automatically_updated", "updated", "new_card"], [50, 25, 25])[0]
            else:
                path = "new_card" if rng.random() < 0.2 else "retry"
        success_at: datetime | None = None
        paying = card
        if path == "retry":
            success_at = plan[rng.choices([0, 1, 2, 3], [45, 30, 15, 10])[0]]
        elif path != "none":
            update_at = t0 + timedelta(days=rng.uniform(0.3, 12))
            if path == "new_card":
                paying = self.card(card.country, update_at, brand=card.brand if rng.random() < 0.6 else None)
                paying = replace(paying, exp_year=max(paying.exp_year, update_at.year + 2))
            else:
                paying = self.renewed_card(card, update_at)
            if update_at <= now:
                self._card_update(sub, update_at, card, paying, "attached" if path == "new_card" else path)
            # New card data is charged right away (customer portal / card updater, then a retry).
            success_at = update_at + timedelta(seconds=rng.uniform(30, 600))
        # The platform's retries that fail before the success (or all of them, when nothing works).
        for r in plan:
            if r > now or (success_at is not None and r >= success_at):
                break
            again = decline if decline.code == "expired_card" or rng.random() < 0.7 else self.decline(card)
            if again.category == "hard" or again.code == "expired_card":
                again = decline
            self._attempt(sub, inv, r, card, again)
        if success_at is not None and success_at <= now:
            self._attempt(sub, inv, success_at, paying, None)
            self._status(sub, success_at + timedelta(seconds=2), "active", "past_due", inv)
        # next_payment_attempt after a failure: the platform's next planned retry (none after a hard one).
        for i, a in enumerate(inv.attempts):
            if a.decline is not None and a.decline.category != "hard":
                inv.next_attempts[i] = next((r for r in plan if r > a.at), None)
        return paying if inv.paid else None


def generate_business(
    customers: int = 300, days: int = 30, seed: int = 7, now: datetime | None = None
) -> Business:
    """Draw `customers` subscribers and their life over the `days` ending at `now` (default: now, UTC)."""
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if days < 1:
        raise ValueError("days must be at least 1")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    window_start = now - timedelta(days=days)
    plans = _plans(seed)
    custs, subs, invoices, happenings = [], [], [], []
    for i in range(customers):
        draw = _CustomerDraw(seed, i, now, window_start, plans)
        c, s = draw.draw()
        custs.append(c)
        subs.append(s)
        invoices.extend(draw.invoices)
        happenings.extend(draw.happenings)
    order = {k: n for n, k in enumerate(HappeningKind.__args__)}  # type: ignore[attr-defined]
    happenings = [h for h in happenings if h.at <= now]
    happenings.sort(key=lambda h: (h.at, h.customer.index, order[h.kind], h.index))
    return Business(seed, now, window_start, plans, custs, subs, invoices, happenings)
