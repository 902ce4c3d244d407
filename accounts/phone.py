"""Phone numbers are stored in E.164. Everything that reads a number typed by a person goes
through here so that the same person always maps to the same string."""

import phonenumbers
from django.conf import settings


class InvalidPhoneNumber(ValueError):
    pass


def phone_normalize(*, raw: str, region: str | None = None) -> str:
    """Return ``raw`` as E.164 or raise InvalidPhoneNumber."""
    if not raw or len(raw) > 32:
        raise InvalidPhoneNumber(raw)
    try:
        parsed = phonenumbers.parse(raw, region or settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(raw) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(raw)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
