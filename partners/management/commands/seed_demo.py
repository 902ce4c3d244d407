"""Demo data for `make run`: a demo user, a staff user and a demo partner with an OAuth app.
Running it again changes nothing that already exists."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from partners.models import Application, Partner

DEMO_PHONE = "+8613800138000"
DEMO_EMAIL = "demo@tokenpass.local"
DEMO_PASSWORD = "tokenpass-demo"
STAFF_EMAIL = "staff@tokenpass.local"
STAFF_PASSWORD = "tokenpass-staff"
DEMO_CLIENT_ID = "demo-partner-app"
# A public client (no secret to publish) for trying the device authorization grant with curl.
DEMO_DEVICE_CLIENT_ID = "demo-tv-box"
# A partner's server (client credentials). Its secret is published here, as the demo
# passwords are: seed_demo runs only where DEMO_DATA_ALLOWED.
DEMO_SERVER_CLIENT_ID = "demo-partner-server"
DEMO_SERVER_SECRET = "tokenpass-demo-server-secret"
DEMO_STARTING_BALANCE = 1_000_000
# Model name -> tokens per million (input, cached input, output).
DEMO_PRICES = {
    "demo-chat-small": (150_000, 15_000, 600_000),
    "demo-chat-large": (2_500_000, 250_000, 10_000_000),
}
# (model, input tokens, output tokens) of the demo app's charges.
DEMO_CHARGES = [
    ("demo-chat-small", 120_000, 30_000),
    ("demo-chat-large", 8_000, 2_000),
    ("demo-chat-small", 40_000, 12_000),
    ("demo-chat-large", 15_000, 6_000),
]


class Command(BaseCommand):
    help = "Create the demo user, staff user, partner and app (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        if not settings.DEMO_DATA_ALLOWED:
            raise CommandError(
                "seed_demo creates accounts with published passwords, among them a staff "
                "superuser; these settings do not allow demo data (DEMO_DATA_ALLOWED)."
            )
        self._accounts_and_apps()
        # Wallet services run in their own durable transactions, so they come after.
        self._wallet()
        self.stdout.write(
            self.style.SUCCESS(
                "Demo data ready. Sign in at http://127.0.0.1:8000/login/\n"
                f"  demo user:  {DEMO_PHONE} (or {DEMO_EMAIL}) / {DEMO_PASSWORD}\n"
                f"  staff user: {STAFF_EMAIL} / {STAFF_PASSWORD}  (admin: /admin/)\n"
                f"  demo OAuth app client_id: {DEMO_CLIENT_ID}\n"
                f"  demo device (TV box) client_id: {DEMO_DEVICE_CLIENT_ID}\n"
                f"  demo partner server: {DEMO_SERVER_CLIENT_ID} / {DEMO_SERVER_SECRET}"
            )
        )

    def _wallet(self) -> None:
        """A starting balance for the demo user, a small price catalog and a few charges by
        the demo app, so that the wallet page has history and a chart. Every posting has a
        fixed idempotency key, so running the command again replays instead of repeating."""
        from wallet import services as wallet_services
        from wallet.models import Bucket, Price, PriceModel

        demo = User.objects.get(phone=DEMO_PHONE)
        staff = User.objects.get(email=STAFF_EMAIL)
        app = Application.objects.get(client_id=DEMO_CLIENT_ID)
        vendor, _ = Partner.objects.get_or_create(
            name="Demo Model Lab", defaults={"status": Partner.Status.ACTIVE}
        )
        for name, prices in DEMO_PRICES.items():
            model, created = PriceModel.objects.get_or_create(
                name=name, defaults={"vendor": vendor, "context_window": 128_000}
            )
            if created:
                Price.objects.create(
                    model=model,
                    effective_from=timezone.now() - timedelta(days=1),
                    input_per_million=prices[0],
                    cached_input_per_million=prices[1],
                    output_per_million=prices[2],
                )
        wallet_services.wallet_staff_credit(
            user=demo,
            amount=DEMO_STARTING_BALANCE,
            reason="Demo starting balance",
            actor=staff,
            idempotency_key="seed-demo-starting-balance",
            source=Bucket.Source.PROMOTION,
        )
        for number, (model_name, input_tokens, output_tokens) in enumerate(DEMO_CHARGES):
            wallet_services.wallet_charge(
                user=demo,
                app=app,
                model=model_name,
                input_tokens=input_tokens,
                cached_input_tokens=0,
                output_tokens=output_tokens,
                idempotency_key=f"seed-demo-charge-{number}",
            )

    @transaction.atomic
    def _accounts_and_apps(self) -> None:
        demo = User.objects.filter(phone=DEMO_PHONE).first()
        if demo is None:
            demo = User.objects.create_user(
                DEMO_EMAIL,
                DEMO_PASSWORD,
                phone=DEMO_PHONE,
                phone_verified=True,
                email_verified=True,
                display_name="Demo User",
            )
        staff = User.objects.filter(email=STAFF_EMAIL).first()
        if staff is None:
            staff = User.objects.create_superuser(STAFF_EMAIL, STAFF_PASSWORD, display_name="Staff")
        partner, _ = Partner.objects.get_or_create(
            name="Demo AI Studio", defaults={"status": Partner.Status.ACTIVE}
        )
        demo_apps = {
            # A web app: authorization code with PKCE, then refresh tokens.
            DEMO_CLIENT_ID: {
                "name": "Demo Chat",
                "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
                "allowed_grant_types": "authorization-code refresh_token",
                "allowed_scopes": "openid profile email phone wallet:charge",
                "redirect_uris": "http://127.0.0.1:8000/demo/callback",
            },
            # A keyboardless device: the device authorization grant.
            DEMO_DEVICE_CLIENT_ID: {
                "name": "Demo TV Box",
                "authorization_grant_type": Application.GRANT_DEVICE_CODE,
                "allowed_grant_types": f"{Application.GRANT_DEVICE_CODE} refresh_token",
                "allowed_scopes": "openid profile wallet:charge",
            },
        }
        Application.objects.get_or_create(
            client_id=DEMO_SERVER_CLIENT_ID,
            defaults={
                "name": "Demo Partner Server",
                "partner": partner,
                "client_type": Application.CLIENT_CONFIDENTIAL,
                "client_secret": DEMO_SERVER_SECRET,
                "algorithm": Application.RS256_ALGORITHM,
                "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
                "allowed_grant_types": Application.GRANT_CLIENT_CREDENTIALS,
                "allowed_scopes": "settlement:read wallet:charge",
            },
        )
        for client_id, fields in demo_apps.items():
            Application.objects.get_or_create(
                client_id=client_id,
                defaults={
                    "partner": partner,
                    "client_type": Application.CLIENT_PUBLIC,
                    "algorithm": Application.RS256_ALGORITHM,
                    **fields,
                },
            )
