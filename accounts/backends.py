from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from accounts.models import User
from accounts.phone import InvalidPhoneNumber, phone_normalize


def user_by_identifier(identifier: str) -> User | None:
    """Find the account a person means by a phone number or an email address."""
    identifier = (identifier or "").strip()
    if not identifier:
        return None
    if "@" in identifier:
        return User.objects.filter(email=identifier.lower()).first()
    try:
        phone = phone_normalize(raw=identifier)
    except InvalidPhoneNumber:
        return None
    return User.objects.filter(phone=phone).first()


class PhoneOrEmailBackend(ModelBackend):
    """Password login by phone number or email address."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if username is None or password is None:
            return None
        user = user_by_identifier(username)
        if user is None:
            # Spend the same time as a real check so that timing does not reveal accounts.
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
