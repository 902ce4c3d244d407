"""One-time codes: hashing, expiry, attempts, single use, supersession, send limits (also
under concurrency against PostgreSQL) and delivery."""

import re
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import close_old_connections, connection
from django.utils import timezone

from accounts.models import OneTimeCode
from accounts.services import (
    MessageKind,
    OtpCheck,
    OtpRateLimited,
    otp_code_check,
    otp_code_digest,
    otp_code_issue,
    otp_code_message_send,
)
from accounts.sms.backends import outbox_messages

PHONE = "+8613800138000"
SIGNUP = OneTimeCode.Purpose.SIGNUP
LOGIN = OneTimeCode.Purpose.LOGIN
SMS = OneTimeCode.Channel.SMS
CODE_RE = re.compile(r"\b(\d{6})\b")


def last_sms_code(to: str) -> str:
    """The code in the newest SMS sent to `to`."""
    messages = outbox_messages(to=to)
    assert messages, f"no SMS was sent to {to}"
    match = CODE_RE.search(messages[-1]["body"])
    assert match, messages[-1]["body"]
    return match.group(1)


def last_email_code(to: str) -> str:
    sent = [m for m in mail.outbox if to in m.to]
    assert sent, f"no email was sent to {to}"
    match = CODE_RE.search(sent[-1].body)
    assert match, sent[-1].body
    return match.group(1)


@pytest.fixture
def issue(django_capture_on_commit_callbacks):
    """otp_code_issue with its on-commit delivery run (eager Celery), returning the clear code
    read back from the SMS outbox."""

    def _issue(recipient=PHONE, purpose=SIGNUP, ip_address="203.0.113.5", **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            row = otp_code_issue(
                purpose=purpose, channel=SMS, recipient=recipient, ip_address=ip_address, **kwargs
            )
        # A row created in the past may already be dead and is then (rightly) not delivered.
        alive = row.expires_at > timezone.now()
        return row, last_sms_code(recipient) if alive else None

    return _issue


pytestmark = pytest.mark.django_db


def test_code_is_six_digits_stored_only_as_a_keyed_hash(issue):
    row, code = issue()

    row.refresh_from_db()
    assert len(code) == 6 and code.isdigit()
    assert code not in row.code_hash
    assert row.code_hash == otp_code_digest(purpose=SIGNUP, recipient=PHONE, code=code)
    # Bound to purpose and recipient: the same code hashes differently elsewhere.
    assert row.code_hash != otp_code_digest(purpose=LOGIN, recipient=PHONE, code=code)
    assert row.expires_at - row.created_at == timedelta(minutes=5)


def test_right_code_is_accepted_once_and_a_replay_fails(issue):
    _row, code = issue()

    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code) == OtpCheck.OK
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code) == OtpCheck.USED


def test_code_for_another_purpose_or_recipient_does_not_match(issue):
    _row, code = issue()

    assert otp_code_check(purpose=LOGIN, recipient=PHONE, code=code) == OtpCheck.MISSING
    assert otp_code_check(purpose=SIGNUP, recipient="+8613900139000", code=code) == (
        OtpCheck.MISSING
    )
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code) == OtpCheck.OK


def test_expired_code_fails(issue):
    row, code = issue()

    later = row.created_at + timedelta(minutes=5)
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code, now=later) == (
        OtpCheck.EXPIRED
    )
    just_before = row.created_at + timedelta(minutes=5) - timedelta(seconds=1)
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code, now=just_before) == (
        OtpCheck.OK
    )


def test_expiry_follows_the_clock(issue, monkeypatch):
    _row, code = issue()
    frozen = timezone.now() + timedelta(minutes=6)
    monkeypatch.setattr(timezone, "now", lambda: frozen)

    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code) == OtpCheck.EXPIRED


def test_attempts_are_counted_and_exhaust_the_code(issue, settings):
    row, code = issue()
    wrong = "000000" if code != "000000" else "111111"

    for _ in range(settings.OTP_CODE_MAX_ATTEMPTS):
        assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=wrong) == OtpCheck.WRONG

    row.refresh_from_db()
    assert row.attempts == settings.OTP_CODE_MAX_ATTEMPTS
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code) == OtpCheck.EXHAUSTED
    row.refresh_from_db()
    assert row.consumed_at is None


def test_newest_code_supersedes_older_ones(issue):
    first, old_code = issue(now=timezone.now() - timedelta(minutes=2))
    _second, new_code = issue()

    if old_code != new_code:
        assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=old_code) == OtpCheck.WRONG
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=new_code) == OtpCheck.OK
    first.refresh_from_db()
    assert first.consumed_at is None


def test_recipient_limit_per_minute_says_when_to_retry(issue):
    start = timezone.now()
    issue(now=start)

    with pytest.raises(OtpRateLimited) as exc:
        otp_code_issue(
            purpose=LOGIN,  # any purpose counts towards the recipient's limit
            channel=SMS,
            recipient=PHONE,
            ip_address="198.51.100.1",
            now=start + timedelta(seconds=20),
        )
    assert exc.value.retry_after == 40
    assert OneTimeCode.objects.count() == 1

    issue(now=start + timedelta(seconds=60))
    assert OneTimeCode.objects.count() == 2


def test_recipient_limit_per_day(issue):
    start = timezone.now() - timedelta(hours=12)
    for i in range(10):
        issue(now=start + timedelta(minutes=2 * i))

    with pytest.raises(OtpRateLimited) as exc:
        otp_code_issue(
            purpose=SIGNUP,
            channel=SMS,
            recipient=PHONE,
            ip_address="198.51.100.1",
            now=start + timedelta(hours=1),
        )
    # The oldest of the ten leaves the 24-hour window 23 hours later.
    assert exc.value.retry_after == 23 * 3600


def test_ip_limit_counts_every_recipient(issue, settings):
    start = timezone.now()
    per_minute = dict((int(p.total_seconds()), n) for p, n in settings.OTP_SEND_LIMITS_PER_IP)[60]
    for i in range(per_minute):
        issue(recipient=f"+861380013{i:04d}", now=start + timedelta(seconds=i))

    with pytest.raises(OtpRateLimited) as exc:
        otp_code_issue(
            purpose=SIGNUP,
            channel=SMS,
            recipient="+8613900139000",
            ip_address="203.0.113.5",
            now=start + timedelta(seconds=10),
        )
    assert exc.value.retry_after == 50
    # Another address is not affected.
    issue(recipient="+8613900139000", ip_address="203.0.113.6", now=start + timedelta(seconds=10))


def test_a_row_without_message_sends_nothing_but_counts(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        otp_code_issue(
            purpose=LOGIN, channel=SMS, recipient=PHONE, ip_address=None, message=MessageKind.NONE
        )
    assert callbacks == []
    assert outbox_messages() == []
    with pytest.raises(OtpRateLimited):
        otp_code_issue(purpose=LOGIN, channel=SMS, recipient=PHONE, ip_address=None)


def test_email_codes_are_mailed(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        row = otp_code_issue(
            purpose=LOGIN,
            channel=OneTimeCode.Channel.EMAIL,
            recipient="ada@example.com",
            ip_address=None,
        )
    code = last_email_code("ada@example.com")
    assert "Tokenpass" in mail.outbox[-1].subject
    assert row.code_hash == otp_code_digest(purpose=LOGIN, recipient="ada@example.com", code=code)


def test_delivery_is_queued_on_commit_not_inline(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        otp_code_issue(purpose=SIGNUP, channel=SMS, recipient=PHONE, ip_address=None)
    assert len(callbacks) == 1
    assert outbox_messages() == []


def test_a_late_delivery_of_a_dead_code_sends_nothing(issue):
    row, code = issue()
    assert otp_code_check(purpose=SIGNUP, recipient=PHONE, code=code) == OtpCheck.OK

    sent = otp_code_message_send(code_id=row.pk, code=code, kind="code", language="en")

    assert sent is False
    assert len(outbox_messages(to=PHONE)) == 1


def test_messages_follow_the_language(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        otp_code_issue(
            purpose=SIGNUP, channel=SMS, recipient=PHONE, ip_address=None, language="zh-hans"
        )
    assert CODE_RE.search(outbox_messages(to=PHONE)[-1]["body"])


def _in_thread(fn, results, index, barrier):
    try:
        barrier.wait(timeout=10)
        results[index] = fn()
    except Exception as exc:  # recorded and asserted on by the test
        results[index] = exc
    finally:
        close_old_connections()
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_to_one_recipient_send_one_code():
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list = [None] * threads_count

    def send(i=0):
        return otp_code_issue(
            purpose=SIGNUP, channel=SMS, recipient=PHONE, ip_address=f"198.51.100.{i + 1}"
        )

    threads = [
        threading.Thread(target=_in_thread, args=(lambda i=i: send(i), results, i, barrier))
        for i in range(threads_count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    sent = [r for r in results if isinstance(r, OneTimeCode)]
    limited = [r for r in results if isinstance(r, OtpRateLimited)]
    assert len(sent) == 1, results
    assert len(limited) == threads_count - 1, results
    assert all(1 <= r.retry_after <= 60 for r in limited)
    assert OneTimeCode.objects.filter(recipient=PHONE).count() == 1
    assert len(outbox_messages(to=PHONE)) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_from_one_address_respect_the_ip_limit(settings):
    settings.OTP_SEND_LIMITS_PER_IP = [(timedelta(minutes=1), 3)]
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list = [None] * threads_count

    def send(i):
        return otp_code_issue(
            purpose=SIGNUP, channel=SMS, recipient=f"+861380013{i:04d}", ip_address="203.0.113.9"
        )

    threads = [
        threading.Thread(target=_in_thread, args=(lambda i=i: send(i), results, i, barrier))
        for i in range(threads_count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sum(isinstance(r, OneTimeCode) for r in results) == 3, results
    assert sum(isinstance(r, OtpRateLimited) for r in results) == 5, results
    assert OneTimeCode.objects.filter(ip_address="203.0.113.9").count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_checks_of_one_code_sign_in_once():
    row = otp_code_issue(purpose=LOGIN, channel=SMS, recipient=PHONE, ip_address=None)
    code = last_sms_code(PHONE)
    threads_count = 6
    barrier = threading.Barrier(threads_count)
    results: list = [None] * threads_count

    threads = [
        threading.Thread(
            target=_in_thread,
            args=(
                lambda: otp_code_check(purpose=LOGIN, recipient=PHONE, code=code),
                results,
                i,
                barrier,
            ),
        )
        for i in range(threads_count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert results.count(OtpCheck.OK) == 1, results
    assert results.count(OtpCheck.USED) == threads_count - 1, results
    row.refresh_from_db()
    assert row.consumed_at is not None


def test_the_code_is_masked_in_the_task_message(django_capture_on_commit_callbacks, monkeypatch):
    from accounts.tasks import otp_code_deliver

    sent = []
    monkeypatch.setattr(otp_code_deliver, "apply_async", lambda **kw: sent.append(kw))
    with django_capture_on_commit_callbacks(execute=True):
        row = otp_code_issue(purpose=SIGNUP, channel=SMS, recipient=PHONE, ip_address=None)

    [call] = sent
    code = call["kwargs"]["code"]
    assert row.code_hash == otp_code_digest(purpose=SIGNUP, recipient=PHONE, code=code)
    assert code not in call["kwargsrepr"]
    assert "******" in call["kwargsrepr"]


def test_a_broker_outage_is_logged_not_raised(django_capture_on_commit_callbacks, monkeypatch):
    from kombu.exceptions import OperationalError

    from accounts.tasks import otp_code_deliver

    def broker_down(**kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(otp_code_deliver, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        row = otp_code_issue(purpose=SIGNUP, channel=SMS, recipient=PHONE, ip_address=None)

    assert OneTimeCode.objects.filter(pk=row.pk).exists()
    assert outbox_messages() == []
