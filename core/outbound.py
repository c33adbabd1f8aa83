"""Where Chatter may send a request on a user's behalf (webhooks, MCP tool servers): a public address, or one in
CHATTER_OUTBOUND_ALLOWED_NETWORKS (the operator's own internal destinations; CHATTER_WEBHOOK_ALLOWED_NETWORKS, its
older name, is honoured too). A URL is checked when it is saved, and each request resolves its host once, checks
every address it gets and connects to the checked address itself, so a name cannot point somewhere else between
check and connect (DNS rebinding): webhooks through `destination_check`, async HTTP clients (the MCP client)
through `CheckedAsyncTransport`, which checks every request it sends."""
from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass

import anyio
import httpx
from django.conf import settings
from django.utils.module_loading import import_string

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that only ever mean this host or a private network (RFC 6761, RFC 8375, ICANN's .internal, mDNS's .local).
INTERNAL_NAMES = ("localhost", "localhost.localdomain")
INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
# Not global, though Python's is_global does not say so for all of them on every version.
NON_PUBLIC_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "192.0.0.0/24",  # IETF protocol assignments
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are an IPv4 address


class DestinationRefused(Exception):
    """The URL points at something Chatter does not send requests to; the message says why."""


class DestinationUnresolved(Exception):
    """The host's name did not resolve (now): a delivery may try again later."""


@dataclass(frozen=True)
class Destination:
    """A checked destination: `url` has the checked address as its host; `host` (the Host header) and
    `sni_hostname` (https: the name sent in TLS and checked against the certificate) keep the URL's name."""
    url: httpx.URL
    host: str
    sni_hostname: str | None


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system's resolver (/etc/hosts, DNS) gives `host`. The default CHATTER_OUTBOUND_RESOLVER."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def destination_check(url: str, *, unresolved_ok: bool = False) -> Destination | None:
    """The URL's destination, once every address its host resolves to is allowed. DestinationRefused says why not.
    A name that does not resolve raises DestinationUnresolved; with `unresolved_ok` (a URL being saved: it may
    resolve later, and every request checks it again) it gives None instead, unless it is an internal name."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise DestinationRefused(f"not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise DestinationRefused("only http and https URLs with a host are allowed")
    if parsed.userinfo:
        raise DestinationRefused("credentials in the URL (user:password@) are not allowed")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    # httpx gives None for a URL without a port (or with its scheme's default); port 0 is not that.
    port = (443 if parsed.scheme == "https" else 80) if parsed.port is None else parsed.port
    if not 0 < port <= 65535:
        raise DestinationRefused(f"port {port} is not a TCP port (1-65535)")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        addresses = _resolved(host, port, unresolved_ok=unresolved_ok)
        if not addresses:
            return None
    for address in addresses:
        refusal = address_refusal(address)
        if refusal:
            where = f"{host} resolves to {address}, " if literal is None else f"{address} is "
            raise DestinationRefused(f"{where}{refusal}: requests go to public addresses only (an operator may "
                                     "allow internal destinations with CHATTER_OUTBOUND_ALLOWED_NETWORKS)")
    chosen = addresses[0]
    return Destination(url=parsed.copy_with(host=str(chosen)), host=parsed.netloc.decode("ascii"),
                       sni_hostname=host if literal is None and parsed.scheme == "https" else None)


def _resolved(host: str, port: int, *, unresolved_ok: bool) -> list[Address]:
    internal = host in INTERNAL_NAMES or host.endswith(INTERNAL_SUFFIXES)
    resolve = import_string(settings.CHATTER_OUTBOUND_RESOLVER)
    try:
        found = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        found, error = [], f"{type(exc).__name__}: {exc}"
    else:
        error = "no address"
    if found:
        try:
            return [ipaddress.ip_address(address) for address in found]
        except ValueError as exc:
            raise DestinationRefused(f"{host} resolves to something that is not an address ({exc})") from None
    if internal:
        raise DestinationRefused(f"{host} is a name of this host or of a private network")
    if unresolved_ok:
        return []
    raise DestinationUnresolved(f"{host} did not resolve ({error})")


def address_refusal(address: Address) -> str:
    """Why requests may not go to `address` ("" when they may): it is allowed when it is in an allowed network
    (allowed_networks()), refused when it (or the IPv4 address inside an IPv6 one) is not public."""
    inner = _embedded_ipv4(address)
    if any(each in network for network in allowed_networks()
           for each in (address, inner) if each is not None and each.version == network.version):
        return ""
    for each in (inner, address):  # the IPv4 address first: it names what the address really is
        if each is None:
            continue
        for kind, test in (("a loopback", each.is_loopback), ("an unspecified", each.is_unspecified),
                           ("a link-local", each.is_link_local), ("a multicast", each.is_multicast),
                           ("a private", each.is_private),
                           ("a non-public", any(each in net for net in NON_PUBLIC_NETWORKS
                                                if net.version == each.version)),
                           ("a reserved", each.is_reserved), ("a non-public", not each.is_global)):
            if test:
                return f"{kind} address"
    return ""


def allowed_networks() -> tuple:
    """The operator's internal destinations: CHATTER_OUTBOUND_ALLOWED_NETWORKS and its older name
    CHATTER_WEBHOOK_ALLOWED_NETWORKS, both honoured (for webhooks and MCP servers alike)."""
    return (*settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS, *settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), which is where it really goes."""
    if address.version != 6:
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context of every outbound client (httpx's default: the system's CA bundle as certifi ships it).
    httpx builds one for each client it makes, loading the bundle each time: about 30 ms of CPU a client, paid by
    every MCP session and webhook delivery."""
    return httpx.create_ssl_context()


class CheckedAsyncTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request only to a checked destination (destination_check, run again
    for every request, so for every connection a client opens, and for whatever URL a server points the client
    at): to the address it checked, with the URL's name as Host and TLS SNI. A refused destination raises
    DestinationRefused, a name that does not resolve DestinationUnresolved; nothing is sent then. Proxies of the
    environment are not used (the checked address is the peer)."""

    def __init__(self, *, limits: httpx.Limits | None = None) -> None:
        self._inner = httpx.AsyncHTTPTransport(trust_env=False, verify=tls_context(),
                                               **({"limits": limits} if limits else {}))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if _is_literal(request.url.host):
            destination = destination_check(url)
        else:  # the system's resolver blocks: not on the event loop
            destination = await anyio.to_thread.run_sync(destination_check, url)
        request.url = destination.url
        request.headers["Host"] = destination.host
        if destination.sni_hostname:
            request.extensions = {**request.extensions, "sni_hostname": destination.sni_hostname}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
