"""OAuth fixtures: signing keys in a per-test file, partner apps with known secrets, a
signed-in browser session that plain HTTP clients can carry, and the authorization step."""

import base64
import hashlib
import re
import secrets
import shutil
import uuid
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from partners.models import Application
from partners.oauth import keys
from tests.factories import PartnerFactory, UserFactory

REDIRECT_PATH = "/test-callback/a"
ALL_GRANTS = "authorization-code refresh_token client-credentials urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture(scope="session")
def _session_key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("oidc") / "oidc-keys.json"
    keys.key_set_init(path=path)
    return path


@pytest.fixture(autouse=True)
def oidc_key_file(settings, tmp_path, _session_key_file):
    """Each test signs with a copy of one session key set, so rotating keys in one test
    leaves the others alone."""
    path = tmp_path / "oidc-keys.json"
    shutil.copy(_session_key_file, path)
    settings.OIDC_KEYS_FILE = path
    settings.OIDC_RSA_PRIVATE_KEY = ""
    settings.OIDC_KEYS_GENERATE = False
    keys.key_set_forget()
    yield path
    keys.key_set_forget()


@pytest.fixture
def partner(db):
    return PartnerFactory()


@pytest.fixture
def make_app(db, partner):
    """make_app(name, **fields) -> (application, plaintext secret)."""

    def make(
        name: str = "App A",
        *,
        redirect_uris: str = f"http://testserver{REDIRECT_PATH}",
        client_type: str = Application.CLIENT_CONFIDENTIAL,
        allowed_grant_types: str = ALL_GRANTS,
        allowed_scopes: str = "openid profile email phone wallet:charge",
        app_partner=None,
        **fields,
    ):
        secret = secrets.token_urlsafe(48)
        app = Application.objects.create(
            name=name,
            partner=app_partner or partner,
            client_type=client_type,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            allowed_grant_types=allowed_grant_types,
            allowed_scopes=allowed_scopes,
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=redirect_uris,
            algorithm=Application.RS256_ALGORITHM,
            client_secret=secret,
            **fields,
        )
        return app, secret

    return make


@pytest.fixture
def chain(make_app):
    """A web app and a live refresh token of a person's sign-in, as the code grant leaves it."""
    app, secret = make_app("Web", allowed_scopes="openid profile")
    user = UserFactory()
    access = get_access_token_model().objects.create(
        user=user,
        application=app,
        token=secrets.token_urlsafe(32),
        scope="openid profile",
        expires=timezone.now() + timedelta(hours=1),
    )
    raw = secrets.token_urlsafe(32)
    get_refresh_token_model().objects.create(
        user=user, application=app, token=raw, access_token=access, token_family=uuid.uuid4()
    )
    return app, secret, user, raw


@pytest.fixture
def user(db):
    return UserFactory(display_name="Ada Lovelace", locale="zh-hans", time_zone="Asia/Shanghai")


def signed_in_cookies(user) -> dict[str, str]:
    """A real Tokenpass session for `user`, as the cookie a browser would send."""
    client = Client()
    client.force_login(user, backend="accounts.backends.PhoneOrEmailBackend")
    return {"sessionid": client.cookies["sessionid"].value}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def consent_form_fields(html: str) -> dict[str, str]:
    fields = {}
    for match in re.finditer(r"<input[^>]*>", html):
        tag = match.group(0)
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


class Browser:
    """A cookie-carrying HTTP client that plays the person's browser against the live
    server (no JavaScript needed for these pages)."""

    def __init__(self, base_url: str, cookies: dict[str, str] | None = None):
        self.base_url = base_url
        self.http = requests.Session()
        for name, value in (cookies or {}).items():
            self.http.cookies.set(name, value)

    def cookie(self, name: str) -> str:
        values = [c.value for c in self.http.cookies if c.name == name]
        return values[-1]

    def get(self, path_or_url: str, **kwargs):
        url = path_or_url if path_or_url.startswith("http") else self.base_url + path_or_url
        return self.http.get(url, allow_redirects=False, timeout=30, **kwargs)

    def post(self, path_or_url: str, data: dict, **kwargs):
        url = path_or_url if path_or_url.startswith("http") else self.base_url + path_or_url
        return self.http.post(url, data=data, allow_redirects=False, timeout=30, **kwargs)

    def authorize(self, params: dict, *, approve: bool | None = True):
        """Run the authorization request; on a consent page, answer it. Returns the final
        response (the redirect to the client, or whatever else came back)."""
        response = self.get("/o/authorize/?" + urlencode(params))
        if (
            response.status_code == 200
            and 'id="consent-title"' in response.text
            and approve is not None
        ):
            fields = consent_form_fields(response.text)
            fields.pop("allow", None)
            if approve:
                fields["allow"] = "Authorize"
            response = self.post("/o/authorize/", fields, headers={"Referer": self.base_url})
        return response


def redirect_params(response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.text[:500])
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


@pytest.fixture
def live_app(live_server, make_app):
    """An app whose redirect URI is on the live server (a path that answers 404)."""

    def make(name: str = "App A", path: str = REDIRECT_PATH, **fields):
        return make_app(name, redirect_uris=f"{live_server.url}{path}", **fields)

    return make


@pytest.fixture
def browser_for(live_server):
    def make(user=None) -> Browser:
        return Browser(live_server.url, signed_in_cookies(user) if user is not None else None)

    return make
