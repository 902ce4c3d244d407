import itertools
from datetime import datetime

import pytest

from tests.factories import PriceFactory, UserFactory, WalletAppFactory
from wallet import services
from wallet.models import Bucket, LedgerAccount
from wallet.selectors import ledger_account_balance

_keys = itertools.count()


def new_key() -> str:
    return f"key-{next(_keys)}"


def fund(user, amount: int, *, expires_at: datetime | None = None, source=Bucket.Source.PURCHASE):
    """Credit ``user`` through a real service: a paid top-up, or a staff credit when the test
    needs an expiry or another source."""
    if expires_at is None and source == Bucket.Source.PURCHASE:
        topup, _ = services.wallet_topup_credit(
            provider="test", provider_transaction_id=new_key(), user=user, amount=amount
        )
        return topup
    if source == Bucket.Source.PURCHASE:
        source = Bucket.Source.PROMOTION
    staff = UserFactory(is_staff=True)
    return services.wallet_staff_credit(
        user=user,
        amount=amount,
        reason="test credit",
        actor=staff,
        idempotency_key=new_key(),
        source=source,
        expires_at=expires_at,
    )


def current_balance(account: LedgerAccount) -> int:
    """An account's balance as every reader sees it: for a shared account, the cached row
    plus the deltas not yet folded."""
    return ledger_account_balance(account=account)


def balance(user) -> int:
    account = LedgerAccount.objects.filter(user=user, kind=LedgerAccount.Kind.WALLET).first()
    return account.balance if account else 0


def held(user) -> int:
    account = LedgerAccount.objects.filter(user=user, kind=LedgerAccount.Kind.HOLDS).first()
    return account.balance if account else 0


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def app(db):
    return WalletAppFactory()


@pytest.fixture
def price(db):
    """1 token per input token, 0.1 per cached input token, 2 per output token."""
    return PriceFactory(
        model__name="gpt-test",
        input_per_million=1_000_000,
        cached_input_per_million=100_000,
        output_per_million=2_000_000,
    )
