"""Run by tests/test_quickstart.py inside `manage.py shell` with config.settings.local on a
fresh SQLite database after `migrate` and `seed_demo`: what a person trying the demo does
with the wallet API, through HTTP."""

import base64
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from accounts.models import User
from partners.management.commands.seed_demo import (
    DEMO_CLIENT_ID,
    DEMO_DEVICE_CLIENT_ID,
    DEMO_PHONE,
    DEMO_SERVER_CLIENT_ID,
    DEMO_SERVER_SECRET,
)
from partners.models import Application, ApplicationReview
from partners.oauth.services import token_checksum
from wallet.audit import wallet_audit_run
from wallet.ledger import balance_deltas_fold
from wallet.models import PriceModel

demo = User.objects.get(phone=DEMO_PHONE)
app = Application.objects.get(client_id=DEMO_CLIENT_ID)
AccessToken.objects.create(
    user=demo,
    application=app,
    token="demo-smoke-token",
    scope="wallet:charge",
    expires=timezone.now() + timedelta(hours=1),
)
api = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION="Bearer demo-smoke-token")
model = api.get("/api/wallet/balance/")
assert model.status_code == 200, model.content
before = model.json()["balance"]

name = PriceModel.objects.order_by("pk").values_list("name", flat=True).first()
charge = api.post(
    "/api/wallet/charges/",
    {"model": name, "input_tokens": 1000, "output_tokens": 200},
    content_type="application/json",
    HTTP_IDEMPOTENCY_KEY="smoke-1",
)
assert charge.status_code == 201, charge.content
replay = api.post(
    "/api/wallet/charges/",
    {"model": name, "input_tokens": 1000, "output_tokens": 200},
    content_type="application/json",
    HTTP_IDEMPOTENCY_KEY="smoke-1",
)
assert replay.json() == charge.json()
batch = api.post(
    "/api/wallet/usage/batch/",
    {
        "records": [
            {"idempotency_key": f"r-{n}", "model": name, "input_tokens": 10} for n in range(5)
        ]
    },
    content_type="application/json",
    HTTP_IDEMPOTENCY_KEY="smoke-batch",
)
assert batch.status_code == 200, batch.content
assert all("charge" in result for result in batch.json()["results"]), batch.content
after = api.get("/api/wallet/balance/").json()["balance"]
spent = charge.json()["amount"] + sum(r["charge"]["amount"] for r in batch.json()["results"])
assert after == before - spent, (before, after, spent)
balance_deltas_fold()
assert wallet_audit_run().ok
assert Client(HTTP_HOST="127.0.0.1").get("/login/").status_code == 200

# The token endpoint's own statements (client and refresh token lookups) on SQLite.
server = Application.objects.create(
    name="Demo server",
    partner=app.partner,
    client_type=Application.CLIENT_CONFIDENTIAL,
    authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    allowed_grant_types="client-credentials refresh_token",
    allowed_scopes="wallet:charge",
    client_secret="demo-server-secret-0123456789-abcdefghij",
)
ApplicationReview.objects.update_or_create(
    application=server, defaults={"status": ApplicationReview.Status.APPROVED}
)
oauth = Client(HTTP_HOST="127.0.0.1")
basic = base64.b64encode(f"{server.client_id}:demo-server-secret-0123456789-abcdefghij".encode())
auth = {"HTTP_AUTHORIZATION": "Basic " + basic.decode()}
granted = oauth.post("/o/token/", {"grant_type": "client_credentials"}, **auth)
assert granted.status_code == 200, granted.content
refused = oauth.post("/o/token/", {"grant_type": "refresh_token", "refresh_token": "nope"}, **auth)
assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.content
# A rotation on SQLite: the refresh grant's own UPDATE and DELETE statements.
first_access = AccessToken.objects.create(
    user=demo,
    application=server,
    token="demo-refresh-access",
    scope="wallet:charge",
    expires=timezone.now() + timedelta(hours=1),
)
RefreshToken.objects.create(
    user=demo,
    application=server,
    token="demo-refresh-token",
    access_token=first_access,
    token_family=uuid.uuid4(),
)
rotated = oauth.post(
    "/o/token/", {"grant_type": "refresh_token", "refresh_token": "demo-refresh-token"}, **auth
)
assert rotated.status_code == 200, rotated.content
old = RefreshToken.objects.get(token_checksum=token_checksum("demo-refresh-token"))
assert old.revoked is not None and old.revoked <= timezone.now(), old.revoked
assert old.access_token_id is None
assert not AccessToken.objects.filter(pk=first_access.pk).exists()
again = oauth.post(
    "/o/token/",
    {"grant_type": "refresh_token", "refresh_token": rotated.json()["refresh_token"]},
    **auth,
)
assert again.status_code == 200, again.content

# The README's device sign-in with the demo TV box: ask for a code, approve it at /device as
# the demo user, and the next poll gets tokens.
device = Client(HTTP_HOST="127.0.0.1")
started = device.post(
    "/o/device-authorization/",
    urlencode({"client_id": DEMO_DEVICE_CLIENT_ID, "scope": "openid profile"}),
    content_type="application/x-www-form-urlencoded",
)
assert started.status_code == 200, started.content
user_code, device_code = started.json()["user_code"], started.json()["device_code"]
poll = {
    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
    "device_code": device_code,
    "client_id": DEMO_DEVICE_CLIENT_ID,
}
pending = device.post("/o/token/", poll)
assert pending.json()["error"] == "authorization_pending", pending.content
person = Client(HTTP_HOST="127.0.0.1")
person.force_login(demo)
assert "Demo TV Box" in person.post("/device", {"user_code": user_code}).content.decode()
approved = person.post("/device", {"user_code": user_code, "action": "approve"})
assert approved.status_code == 200 and b"Device connected" in approved.content
cache.clear()  # the polling interval (slow_down) is counted in the cache
connected = device.post("/o/token/", poll)
assert connected.status_code == 200 and "refresh_token" in connected.json(), connected.content

# The README's partner server: a client credentials token (not stored), its statements, and
# revocation.
server = Client(HTTP_HOST="127.0.0.1")
server_basic = (
    "Basic " + base64.b64encode(f"{DEMO_SERVER_CLIENT_ID}:{DEMO_SERVER_SECRET}".encode()).decode()
)
issued = server.post(
    "/o/token/",
    {"grant_type": "client_credentials", "scope": "settlement:read"},
    HTTP_AUTHORIZATION=server_basic,
)
assert issued.status_code == 200, issued.content
server_token = issued.json()["access_token"]
assert not AccessToken.objects.filter(token_checksum=token_checksum(server_token)).exists()
statements = server.get("/api/settlement/statements/", HTTP_AUTHORIZATION=f"Bearer {server_token}")
assert statements.status_code == 200, statements.content
revoked = server.post("/o/revoke_token/", {"token": server_token}, HTTP_AUTHORIZATION=server_basic)
assert revoked.status_code == 200, revoked.content
after = server.get("/api/settlement/statements/", HTTP_AUTHORIZATION=f"Bearer {server_token}")
assert after.status_code == 401, after.content
print("quickstart demo ok")
