"""Celery tasks of the accounts app. Thin: JSON arguments, retries and time limits here, the
work in accounts.services."""

import smtplib

from celery import shared_task

from accounts.services import otp_code_message_send
from accounts.sms.backends import SmsDeliveryError


@shared_task(
    name="accounts.otp_code_deliver",
    autoretry_for=(SmsDeliveryError, smtplib.SMTPException, ConnectionError),
    # A code lives five minutes: back off 1, 2, 4, 8, 16 s (with jitter) and then give up
    # rather than deliver a code that has already expired.
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=30,
    time_limit=45,
    ignore_result=True,
)
def otp_code_deliver(*, code_id: int, code: str, kind: str, language: str) -> None:
    """Send the message for one-time code `code_id`. `code` is the clear code (empty for
    messages that carry none); it is never logged nor returned."""
    otp_code_message_send(code_id=code_id, code=code, kind=kind, language=language)
