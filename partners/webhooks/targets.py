"""Which URLs we agree to call. A webhook URL is chosen by a partner, so without these checks
our server could be made to POST into its own network (server-side request forgery).

Rules: http or https only, with a host; never this server itself (the host of SITE_URL); and,
unless WEBHOOKS_ALLOW_PRIVATE_TARGETS is set (the test settings set it, for a listener on
127.0.0.1), no loopback, private, link-local, shared, reserved or multicast address, whether
written in the URL or what its name resolves to. Names are resolved again before every
delivery, so a name that later points inside is refused then.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def host_resolve(host: str) -> list[str]:
    """The addresses `host` resolves to (empty if it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _is_site_itself(host: str, port: int) -> bool:
    site = urlsplit(settings.SITE_URL)
    site_host = (site.hostname or "").lower()
    if not site_host:
        return False
    if host != site_host:
        return False
    try:
        ipaddress.ip_address(site_host)
    except ValueError:
        # A public name of this server: refused on any port.
        return True
    # SITE_URL on an address (development and tests): only its own port is this server; other
    # loopback ports fall under the private-address rule instead.
    return port == (site.port or _default_port(site.scheme))


def webhook_url_validate(url: str, *, resolve: bool = True) -> str:
    """Return the URL if we may call it; raise ValidationError (code "url_refused") if not.
    A name that does not resolve (yet) is accepted here and checked again at delivery."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValidationError(_("Use an http or https URL."), code="url_refused")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ValidationError(_("The URL needs a host name."), code="url_refused")
    if parts.username or parts.password:
        raise ValidationError(
            _("The URL must not contain a user name or password."), code="url_refused"
        )
    try:
        port = parts.port or _default_port(parts.scheme)
    except ValueError as exc:
        raise ValidationError(_("The URL has an invalid port."), code="url_refused") from exc
    if _is_site_itself(host, port):
        raise ValidationError(_("The URL points at Tokenpass itself."), code="url_refused")
    if getattr(settings, "WEBHOOKS_ALLOW_PRIVATE_TARGETS", False):
        return url.strip()
    refused = ValidationError(
        _("The URL points at a private or local network address."), code="url_refused"
    )
    if host in LOCAL_NAMES or host.endswith((".localhost", ".local", ".internal")):
        raise refused
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not _address_is_public(literal):
            raise refused
        return url.strip()
    if resolve:
        for address in host_resolve(host):
            if not _address_is_public(ipaddress.ip_address(address.split("%")[0])):
                raise refused
    return url.strip()
