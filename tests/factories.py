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
