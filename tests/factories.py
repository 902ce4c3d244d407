import factory
from django.contrib.auth.hashers import make_password

from accounts.models import User
from partners.models import Partner

DEFAULT_PASSWORD = "correct horse battery staple"
_DEFAULT_PASSWORD_HASH: list[str] = []


def _default_password_hash() -> str:
    # Argon2 on every factory call would dominate the suite's run time; hash once.
    if not _DEFAULT_PASSWORD_HASH:
        _DEFAULT_PASSWORD_HASH.append(make_password(DEFAULT_PASSWORD))
    return _DEFAULT_PASSWORD_HASH[0]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    phone = factory.Sequence(lambda n: f"+86138{n:08d}")
    phone_verified = True
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    email_verified = True
    display_name = factory.Faker("name")
    password = factory.LazyFunction(_default_password_hash)


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    name = factory.Sequence(lambda n: f"Partner {n}")
    status = Partner.Status.ACTIVE


# Wallet ---------------------------------------------------------------------------------------


def _yesterday():
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(days=1)


class WalletAppFactory(factory.django.DjangoModelFactory):
    """A partner app that charges wallets."""

    class Meta:
        model = "partners.Application"

    name = factory.Sequence(lambda n: f"Charging app {n}")
    partner = factory.SubFactory(PartnerFactory)
    client_type = "confidential"
    authorization_grant_type = "authorization-code"
    redirect_uris = "https://app.example.com/callback"


class PriceModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "wallet.PriceModel"

    vendor = factory.SubFactory(PartnerFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    context_window = 128_000


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "wallet.Price"

    model = factory.SubFactory(PriceModelFactory)
    effective_from = factory.LazyFunction(_yesterday)
    input_per_million = 1_000_000
    cached_input_per_million = 100_000
    output_per_million = 2_000_000
