"""Bad input gets RFC 6749 / OpenID Connect errors, never a server error, and never a
redirect to a URI the app did not register."""

import base64

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from oauth2_provider.models import get_grant_model

from tests.partners.conftest import pkce_pair, redirect_params

pytestmark = pytest.mark.django_db(transaction=True)


def authorize_params(app, **extra):
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


@pytest.fixture
def signed_in(live_app, user, browser_for):
    app, secret = live_app("App A")
    return app, secret, browser_for(user)


def code_for(browser, app, verifier_challenge=None):
    verifier, challenge = verifier_challenge or pkce_pair()
    response = browser.authorize(authorize_params(app, code_challenge=challenge))
    return redirect_params(response)["code"], verifier


def exchange(live_server, app, secret, code, verifier, **extra):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": app.redirect_uris,
        "code_verifier": verifier,
        **extra,
    }
    return requests.post(
        f"{live_server.url}/o/token/", data=data, auth=(app.client_id, secret), timeout=10
    )


def test_unknown_client_and_wrong_redirect_uri_show_an_error_page(signed_in):
    app, _, browser = signed_in
    unknown = browser.get("/o/authorize/", params=authorize_params(app, client_id="nope"))
    assert unknown.status_code == 400 and "Location" not in unknown.headers
    assert 'id="oauth-error"' in unknown.text
    for bad_uri in (
        "https://evil.example/cb",
        app.redirect_uris + "?extra=1",
        app.redirect_uris + "/",
        app.redirect_uris.replace("http://", "https://"),
    ):
        response = browser.get("/o/authorize/", params=authorize_params(app, redirect_uri=bad_uri))
        assert response.status_code == 400, bad_uri
        assert "Location" not in response.headers
    # even with prompt=none and no session
    from tests.partners.conftest import Browser

    anonymous = Browser(browser.base_url).get(
        "/o/authorize/",
        params=authorize_params(app, redirect_uri="https://evil.example/cb", prompt="none"),
    )
    assert anonymous.status_code == 400 and "Location" not in anonymous.headers


def test_pkce_is_required_and_must_be_s256(signed_in):
    app, _, browser = signed_in
    missing = redirect_params(
        browser.get(
            "/o/authorize/",
            params=authorize_params(app, code_challenge=None, code_challenge_method=None),
        )
    )
    assert missing["error"] == "invalid_request"
    plain = redirect_params(
        browser.get(
            "/o/authorize/",
            params=authorize_params(app, code_challenge="a" * 43, code_challenge_method="plain"),
        )
    )
    assert plain["error"] == "invalid_request" and plain["iss"]


def test_bad_verifier_replayed_and_expired_codes(live_server, signed_in):
    app, secret, browser = signed_in
    # wrong verifier
    code, verifier = code_for(browser, app)
    wrong = exchange(live_server, app, secret, code, "x" * 50)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # missing verifier
    code, verifier = code_for(browser, app)
    missing = exchange(live_server, app, secret, code, "")
    assert missing.status_code == 400
    # replay: the second use fails and the tokens from the first die
    code, verifier = code_for(browser, app)
    first = exchange(live_server, app, secret, code, verifier)
    assert first.status_code == 200, first.text
    replay = exchange(live_server, app, secret, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    tokens = first.json()
    introspected = requests.post(
        f"{live_server.url}/o/introspect/",
        data={"token": tokens["access_token"]},
        auth=(app.client_id, secret),
        timeout=10,
    ).json()
    assert introspected == {"active": False}
    refreshed = requests.post(
        f"{live_server.url}/o/token/",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert refreshed.status_code == 400
    # expired code
    code, verifier = code_for(browser, app)
    get_grant_model().objects.filter(application=app).update(expires="2000-01-01T00:00:00Z")
    expired = exchange(live_server, app, secret, code, verifier)
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"
    # a code redeemed with a different redirect_uri
    code, verifier = code_for(browser, app)
    other = exchange(live_server, app, secret, code, verifier, redirect_uri="https://evil.example/")
    assert other.status_code == 400


def test_a_json_body_is_told_the_token_endpoint_takes_a_form(live_server, signed_in):
    """RFC 6749 §3.2: the token endpoint's parameters come form-encoded. A JSON body gets
    invalid_request saying so, not an unsupported grant type; a form still works."""
    app, secret, _browser = signed_in
    grant = {"grant_type": "client_credentials"}
    response = requests.post(
        f"{live_server.url}/o/token/", json=grant, auth=(app.client_id, secret), timeout=10
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "application/x-www-form-urlencoded" in response.json()["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    form = requests.post(
        f"{live_server.url}/o/token/", data=grant, auth=(app.client_id, secret), timeout=10
    )
    assert form.json().get("error") != "invalid_request", form.text
    # Parameters in the query string and no body: oauthlib's own, more precise answer.
    query = requests.post(
        f"{live_server.url}/o/token/?grant_type=client_credentials",
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert query.status_code == 400 and query.json()["error"] == "invalid_request"
    assert "form-urlencoded" not in query.json()["error_description"], query.text


def test_unsupported_grants_and_response_types(live_server, signed_in):
    app, secret, browser = signed_in
    for grant in ("password", "implicit", "foo", "urn:ietf:params:oauth:grant-type:jwt-bearer"):
        response = requests.post(
            f"{live_server.url}/o/token/",
            data={"grant_type": grant, "username": "a", "password": "b"},
            auth=(app.client_id, secret),
            timeout=10,
        )
        assert response.status_code == 400, (grant, response.text)
        assert response.json()["error"] == "unsupported_grant_type"
    for response_type in ("token", "id_token", "code id_token", "nonsense"):
        response = browser.get(
            "/o/authorize/", params=authorize_params(app, response_type=response_type)
        )
        assert response.status_code in (302, 400), response_type
        if response.status_code == 302:
            assert redirect_params(response)["error"] in (
                "unsupported_response_type",
                "unauthorized_client",
                "invalid_request",
            )


def test_oversized_parameters_are_invalid_request(live_server, signed_in):
    app, secret, browser = signed_in
    page = browser.get("/o/authorize/", params=authorize_params(app, state="s" * 5000))
    assert page.status_code == 400 and "invalid_request" in page.text
    token = requests.post(
        f"{live_server.url}/o/token/",
        data={"grant_type": "authorization_code", "code": "c", "code_verifier": "v" * 500},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert token.status_code == 400 and token.json()["error"] == "invalid_request"
    introspect = requests.post(
        f"{live_server.url}/o/introspect/",
        data={"token": "t" * 10_000},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert introspect.status_code == 400 and introspect.json()["error"] == "invalid_request"
    many = requests.post(
        f"{live_server.url}/o/token/",
        data={f"p{i}": "x" for i in range(100)},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert many.status_code == 400 and many.json()["error"] == "invalid_request"


def test_bad_tokens_at_userinfo_and_logout(live_server, signed_in):
    _app, _secret, browser = signed_in
    for value in ("garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer"):
        response = requests.get(
            f"{live_server.url}/o/userinfo/",
            headers={"Authorization": f"Bearer {value}"},
            timeout=10,
        )
        assert response.status_code in (400, 401, 403), value
    for hint in ("garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."):
        response = browser.get("/o/logout/", params={"id_token_hint": hint})
        assert response.status_code == 400, (hint, response.status_code)
    unknown_client = browser.get(
        "/o/logout/", params={"client_id": "nope", "post_logout_redirect_uri": "https://x.example/"}
    )
    assert unknown_client.status_code == 400


def test_garbage_never_causes_a_server_error(live_server, signed_in):
    app, secret, browser = signed_in
    junk = ["", "\x00", "%", "😀" * 10, "a" * 300, "' OR 1=1 --"]
    for value in junk:
        for params in (
            {"client_id": value},
            authorize_params(app, redirect_uri=value),
            authorize_params(app, scope=value),
            authorize_params(app, max_age=value),
            authorize_params(app, prompt=value),
            authorize_params(app, code_challenge=value),
        ):
            assert browser.get("/o/authorize/", params=params).status_code < 500, params
        for data in (
            {"grant_type": "authorization_code", "code": value, "code_verifier": value},
            {"grant_type": "refresh_token", "refresh_token": value},
            {"grant_type": "client_credentials", "scope": value},
            {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": value},
            {"grant_type": value},
        ):
            response = requests.post(
                f"{live_server.url}/o/token/", data=data, auth=(app.client_id, secret), timeout=10
            )
            assert response.status_code < 500, (data, response.text[:200])
            assert "error" in response.json() or response.status_code == 200
        for url, data in (
            ("/o/revoke_token/", {"token": value or "x"}),
            ("/o/introspect/", {"token": value or "x"}),
            ("/o/device-authorization/", {"client_id": value}),
        ):
            assert (
                requests.post(
                    f"{live_server.url}{url}", data=data, auth=(app.client_id, secret), timeout=10
                ).status_code
                < 500
            )
    basic = requests.post(
        f"{live_server.url}/o/token/",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!notbase64"},
        timeout=10,
    )
    assert basic.status_code == 401
    # Garbage as the client's own credentials: each failure is counted, none is a 500.
    for value in junk:
        for credentials, data in (
            (f"{value}:{secret}", {"grant_type": "client_credentials"}),
            (f"{app.client_id}:{value}", {"grant_type": "client_credentials"}),
            (None, {"grant_type": "refresh_token", "refresh_token": "x", "client_id": value}),
        ):
            headers = {}
            if credentials is not None:
                encoded = base64.b64encode(credentials.encode()).decode()
                headers["Authorization"] = f"Basic {encoded}"
            response = requests.post(
                f"{live_server.url}/o/token/", data=data, headers=headers, timeout=10
            )
            assert response.status_code in (400, 401), (credentials, data, response.text[:200])
            if credentials is not None:
                device = requests.post(
                    f"{live_server.url}/o/device-authorization/", headers=headers, timeout=10
                )
                assert device.status_code in (400, 401), (credentials, device.text[:200])
                assert device.json()["error"]
            assert response.json()["error"] in (
                "invalid_client",
                "invalid_request",
                "invalid_grant",
            )


def test_unknown_client_at_device_and_token_endpoints(live_server):
    device = requests.post(
        f"{live_server.url}/o/device-authorization/", data={"client_id": "nope"}, timeout=10
    )
    assert device.status_code == 401 and device.json()["error"] == "invalid_client"
    token = OAuth2Session(client_id="nope", client_secret="nope")
    response = token.post(
        f"{live_server.url}/o/token/", data={"grant_type": "client_credentials"}, auth=("nope", "x")
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_a_code_redeemed_twice_at_once_yields_one_token_set(live_server, signed_in):
    import threading

    from oauth2_provider.models import get_access_token_model

    app, secret, browser = signed_in
    code, verifier = code_for(browser, app)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def redeem():
        barrier.wait()
        results.append(exchange(live_server, app, secret, code, verifier).status_code)

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(200) <= 1
    assert all(status in (200, 400) for status in results), results
    # whatever happened, at most one access token exists for that code, and if a replay
    # was seen, none is left alive
    assert get_access_token_model().objects.filter(application=app).count() <= 1


def test_the_grant_row_holds_only_a_checksum_of_the_code(live_server, signed_in):
    import hashlib

    app, secret, browser = signed_in
    code, verifier = code_for(browser, app)

    stored = list(get_grant_model().objects.filter(application=app).values_list("code", flat=True))
    assert stored == [hashlib.sha256(code.encode()).hexdigest()]
    assert not get_grant_model().objects.filter(code=code).exists()
    # The code the client got still redeems once, and the grant is gone afterwards.
    response = exchange(live_server, app, secret, code, verifier)
    assert response.status_code == 200, response.text
    assert "id_token" in response.json()
    assert not get_grant_model().objects.filter(application=app).exists()
