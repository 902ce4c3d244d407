"""The Simplified Chinese catalog: complete, compiled, covering every marked string, and used by
the pages when the browser asks for Chinese or the person picks it in the language switcher."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from tests.factories import UserFactory

LC_MESSAGES = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"
PO = LC_MESSAGES / "django.po"
MO = LC_MESSAGES / "django.mo"
BACKEND = "accounts.backends.PhoneOrEmailBackend"

# What makemessages scans (the Makefile's `messages` target skips the same directories).
SOURCE_DIRS = ["accounts", "partners", "wallet", "config", "templates"]

# Printf-style and str.format placeholders, and HTML tags: a translation must keep each one.
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|%[sd]|\{\w*\}|<[^>]+>")


@pytest.fixture(scope="module")
def catalog() -> polib.POFile:
    return polib.pofile(str(PO))


def translation_of(entry: polib.POEntry) -> str:
    return entry.msgstr_plural.get(0, "") if entry.msgid_plural else entry.msgstr


def test_the_catalog_has_one_plural_form(catalog):
    # Chinese nouns do not inflect for number: every plural entry has exactly one form.
    assert catalog.metadata["Plural-Forms"] == "nplurals=1; plural=0;"
    assert catalog.metadata["Content-Type"] == "text/plain; charset=UTF-8"
    for entry in catalog:
        if entry.msgid_plural:
            assert list(entry.msgstr_plural) == [0], entry.msgid


def test_every_entry_is_translated_and_none_is_fuzzy_or_obsolete(catalog):
    assert len(catalog) > 800  # the catalog is the real one, not an empty file
    assert not catalog.metadata_is_fuzzy
    assert [e.msgid for e in catalog.untranslated_entries()] == []
    assert [e.msgid for e in catalog.fuzzy_entries()] == []
    assert [e.msgid for e in catalog.obsolete_entries()] == []
    assert [e.msgid for e in catalog if not translation_of(e).strip()] == []


def test_translations_keep_placeholders_and_html(catalog):
    wrong = [
        (entry.msgid, translation_of(entry))
        for entry in catalog
        if sorted(PLACEHOLDER.findall(entry.msgid))
        != sorted(PLACEHOLDER.findall(translation_of(entry)))
    ]
    assert wrong == []


def test_translations_are_chinese(catalog):
    # An entry copied over untranslated would pass the checks above. A translation without
    # Chinese characters may only hold placeholders, punctuation, and names, codes and units
    # that stay in Latin letters.
    han = re.compile(r"[\u4e00-\u9fff]")
    latin_words = re.compile(r"\b(SWIFT|BIC|URL|Logo|Webhook|Tokenpass|Token)\b")
    untranslated = [
        entry.msgid
        for entry in catalog
        if not han.search(translation_of(entry))
        and re.search(
            r"[A-Za-z]{2,}", latin_words.sub("", PLACEHOLDER.sub("", translation_of(entry)))
        )
    ]
    assert untranslated == []


def test_the_platform_token_unit_is_one_word_everywhere(catalog):
    # Platform tokens are "Token" in every message; OAuth access and refresh tokens are 令牌.
    assert [e.msgid for e in catalog if "代币" in translation_of(e)] == []
    for entry in catalog:
        if "token" in entry.msgid.lower():
            assert "Token" in translation_of(entry) or "令牌" in translation_of(entry), entry.msgid
    for msgid in [
        "tokens",
        "Credit tokens",
        "Tokens per code",
        "Charge your token wallet",
        "input price, per million tokens",
        "%(amount)s tokens were added to your wallet.",
        "The adjustment is a non-zero integer number of tokens.",
    ]:
        assert "Token" in translation_of(catalog.find(msgid)), msgid
    for msgid in ["Refresh tokens", "refresh token reuse detected", "token id"]:
        assert "令牌" in translation_of(catalog.find(msgid)), msgid


def test_the_compiled_catalog_matches_the_po_file(catalog):
    # The .mo is committed so that a machine without gettext serves Chinese; it must be the
    # compilation of the .po as it is now.
    compiled = polib.mofile(str(MO))
    expected = {(e.msgctxt, e.msgid): translation_of(e) for e in catalog}
    actual = {
        (e.msgctxt, e.msgid): (e.msgstr_plural.get(0, "") if e.msgid_plural else e.msgstr)
        for e in compiled
        if e.msgid
    }
    assert actual == expected


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs gettext's xgettext")
def test_every_marked_string_in_the_source_is_in_the_catalog(tmp_path):
    # Extract the strings of a copy of the source tree, exactly as `make messages` does, and
    # compare msgids: a string marked for translation but missing from the catalog would show
    # up in English on a Chinese page.
    for name in SOURCE_DIRS:
        shutil.copytree(
            Path(settings.BASE_DIR) / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "migrations"),
        )
    (tmp_path / "locale").mkdir()
    subprocess.run(
        [
            sys.executable,
            str(Path(settings.BASE_DIR) / "manage.py"),
            "makemessages",
            "-l",
            "zh_Hans",
            "--no-obsolete",
            "--no-location",
        ],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "PYTHONPATH": str(settings.BASE_DIR),
        },
        check=True,
        capture_output=True,
    )
    extracted = polib.pofile(str(tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"))
    catalog = polib.pofile(str(PO))
    in_source = {(e.msgctxt, e.msgid) for e in extracted}
    in_catalog = {(e.msgctxt, e.msgid) for e in catalog}
    assert sorted(in_source - in_catalog, key=str) == []


def test_gettext_returns_the_chinese_strings():
    with translation.override("zh-hans"):
        assert translation.gettext("Sign in") == "登录"
        assert translation.gettext("Two-factor authentication") == "两步验证"
        assert translation.gettext("Recovery codes") == "恢复码"
        assert translation.gettext("Your wallet") == "我的钱包"
        assert (
            translation.ngettext("Ended %(count)d session.", "Ended %(count)d sessions.", 3)
            % {"count": 3}
            == "已结束 3 个会话。"
        )
        assert translation.gettext("%(amount)s tokens were added to your wallet.") % {
            "amount": "1,000"
        } == ("已向您的钱包充入 1,000 Token。")


# Pages, through the HTTP client.

PUBLIC_PAGES = {
    "accounts:login": ["登录 Tokenpass", "手机号或邮箱", "忘记密码", "注册账号"],
    "accounts:signup": ["注册 Tokenpass 账号", "手机号", "确认密码", "已有账号"],
    "accounts:login_code": ["验证码登录", "获取验证码"],
    "accounts:reset": ["重置密码", "返回登录"],
}
SIGNED_IN_PAGES = {
    "accounts:profile": ["我的账号", "个人资料", "登录身份", "保存资料", "退出登录"],
    "accounts:security": ["两步验证", "修改密码", "登录设备"],
    "accounts:security_log": ["安全日志"],
    "wallet:overview": ["我的钱包", "余额", "Token", "使用兑换码"],
    "wallet:redeem": ["使用兑换码", "兑换", "返回钱包"],
    "connected-apps": ["已授权应用"],
}


def english_leftovers(html: str) -> list[str]:
    # Words of the English page that must not survive on the Chinese one.
    return [word for word in ("Sign in", "Sign out", "Your account", "Password") if word in html]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "expected"), PUBLIC_PAGES.items())
def test_public_pages_follow_accept_language(client, name, expected):
    response = client.get(reverse(name), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.8")

    html = response.content.decode()
    assert response.status_code == 200
    assert '<html lang="zh-hans">' in html
    assert [text for text in expected if text not in html] == []
    assert english_leftovers(html) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "expected"), SIGNED_IN_PAGES.items())
def test_signed_in_pages_follow_accept_language(client, name, expected):
    client.force_login(UserFactory(), backend=BACKEND)

    response = client.get(reverse(name), HTTP_ACCEPT_LANGUAGE="zh-CN")

    html = response.content.decode()
    assert response.status_code == 200
    assert '<html lang="zh-hans">' in html
    assert [text for text in expected if text not in html] == []
    assert english_leftovers(html) == []


@pytest.mark.django_db
def test_an_english_browser_still_gets_english(client):
    html = client.get(reverse("accounts:login"), HTTP_ACCEPT_LANGUAGE="en-US").content.decode()

    assert '<html lang="en">' in html
    assert "Sign in to Tokenpass" in html
    assert "登录" not in html


@pytest.mark.django_db
def test_the_language_switcher_sets_chinese_for_the_next_pages(client):
    login = reverse("accounts:login")
    assert 'value="zh-hans"' in client.get(login).content.decode()

    response = client.post(reverse("set_language"), {"language": "zh-hans", "next": login})

    assert response.status_code == 302
    assert response.url == login
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    # The cookie wins over an English Accept-Language header.
    html = client.get(login, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="zh-hans">' in html
    assert "登录 Tokenpass" in html

    client.post(reverse("set_language"), {"language": "en", "next": login})
    assert "Sign in to Tokenpass" in client.get(login).content.decode()


@pytest.mark.django_db
def test_form_errors_and_messages_are_in_chinese(client):
    client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
    user = UserFactory()

    response = client.post(
        reverse("accounts:login"), {"username": user.phone, "password": "not the password"}
    )
    assert "手机号、邮箱或密码不正确。" in response.content.decode()

    client.force_login(user, backend=BACKEND)
    response = client.post(reverse("accounts:logout"), follow=True)
    assert "您已退出登录。" in response.content.decode()


# The same flow in a browser: a person picks 简体中文 in the top bar and signs in in Chinese.


@pytest.mark.django_db(transaction=True)
def test_a_person_switches_to_chinese_and_signs_in(page):
    from tests.factories import DEFAULT_PASSWORD

    user = UserFactory()
    page.goto("/login/")
    assert page.get_by_role("heading", name="Sign in to Tokenpass").is_visible()

    with page.expect_navigation():
        page.get_by_label("Language").select_option("zh-hans")

    assert page.get_by_role("heading", name="登录 Tokenpass").is_visible()
    page.get_by_label("手机号或邮箱").fill(user.phone)
    page.get_by_label("密码").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()

    page.wait_for_url("**/account/")
    assert page.get_by_role("heading", name="我的账号").is_visible()
    assert page.locator("html").get_attribute("lang") == "zh-hans"
