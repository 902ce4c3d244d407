"""Demo data for `make run`: a demo user, a staff user and a demo partner with an OAuth app.
Running it again changes nothing that already exists."""

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from partners.models import Application, Partner

DEMO_PHONE = "+8613800138000"
DEMO_EMAIL = "demo@tokenpass.local"
DEMO_PASSWORD = "tokenpass-demo"
STAFF_EMAIL = "staff@tokenpass.local"
STAFF_PASSWORD = "tokenpass-staff"
DEMO_CLIENT_ID = "demo-partner-app"


class Command(BaseCommand):
    help = "Create the demo user, staff user, partner and app (idempotent)."

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
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
        if not Application.objects.filter(client_id=DEMO_CLIENT_ID).exists():
            Application.objects.create(
                client_id=DEMO_CLIENT_ID,
                name="Demo Chat",
                partner=partner,
                client_type=Application.CLIENT_PUBLIC,
                authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
                allowed_grant_types="authorization-code refresh_token",
                allowed_scopes="openid profile email phone",
                redirect_uris="http://127.0.0.1:8000/demo/callback",
                algorithm=Application.RS256_ALGORITHM,
            )
        self.stdout.write(
            self.style.SUCCESS(
                "Demo data ready. Sign in at http://127.0.0.1:8000/login/\n"
                f"  demo user:  {DEMO_PHONE} (or {DEMO_EMAIL}) / {DEMO_PASSWORD}\n"
                f"  staff user: {STAFF_EMAIL} / {STAFF_PASSWORD}  (admin: /admin/)\n"
                f"  demo OAuth app client_id: {DEMO_CLIENT_ID}"
            )
        )
