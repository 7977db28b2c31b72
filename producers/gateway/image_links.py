"""Image parts given as http(s) URLs, as OpenAI accepts them: downloaded by the gateway.

LM Studio takes images only as files the client uploads first (`lms.prepare_image` reads a
path or bytes); the pool carries them as data URLs, which the worker uploads to its LM Studio.
So the gateway downloads each linked image (all of one request at once), with a size limit
and a timeout, and puts it in the message as a data URL. A link that cannot be used is a 400
naming the URL and why (status, not an image, too big, timed out, unreachable).

Only chat requests over HTTP: a batch file's lines keep refusing links (`lmq batch`'s
validator), since fetching thousands of images while validating belongs to no one's
deadline. File paths and file:// URLs are never read for a remote caller.

A link is a request the gateway makes on the caller's behalf from inside the network (SSRF):
unless `LMQ_GATEWAY_FETCH_PRIVATE_IMAGES` is on, a host that resolves to a loopback,
private, link-local, multicast or reserved address is refused, checked again at every
redirect hop (redirects are followed here, not by httpx, for that). The download then
connects to the very address that was checked, with the name kept in the Host header and
as the TLS server name (SNI and the certificate's check): if httpx resolved the name again,
a second DNS answer could point at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from typing import Any

import httpx

from producers.gateway.errors import ApiError, bad_request

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's limit for one image in a request
FETCH_TIMEOUT_S = 10.0  # connect, and between bytes; the whole download has DOWNLOAD_S
DOWNLOAD_S = 30.0
MAX_REDIRECTS = 3
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client() -> httpx.AsyncClient:
    """The gateway's one client for image downloads (its connections are reused)."""
    return httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False,
                             headers={"User-Agent": "lmstudio-queue-gateway"})


def _links(messages: Any) -> list[tuple[str, dict[str, Any]]]:
    """(where, image_url dict) of every part whose url is http(s)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for number, part in enumerate(content if isinstance(content, list) else []):
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else None
            if isinstance(image, dict) and isinstance(url, str) \
                    and url.lower().startswith(("http://", "https://")):
                found.append((f"messages[{index}].content[{number}]", image))
    return found


async def inline_images(body: dict[str, Any], http: httpx.AsyncClient, *,
                        private_ok: bool = False) -> dict[str, Any]:
    """`body` with every linked image replaced by its data URL (in place; returned).
    `private_ok`: fetch from internal addresses too (LMQ_GATEWAY_FETCH_PRIVATE_IMAGES)."""
    links = _links(body.get("messages"))
    if links:
        urls = await asyncio.gather(*(_data_url(http, where, image["url"], private_ok)
                                      for where, image in links))
        for (_, image), url in zip(links, urls, strict=True):
            image["url"] = url
    return body


async def _data_url(http: httpx.AsyncClient, where: str, url: str, private_ok: bool) -> str:
    try:
        async with asyncio.timeout(DOWNLOAD_S):
            data, mime = await _follow(http, where, url, private_ok)
    except TimeoutError:
        raise _refused(where, url, f"no complete answer within {DOWNLOAD_S:g}s") from None
    except httpx.TimeoutException:
        raise _refused(where, url, f"timed out after {FETCH_TIMEOUT_S:g}s") from None
    except httpx.HTTPError as exc:
        raise _refused(where, url, f"{type(exc).__name__}: {exc}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


async def _follow(http: httpx.AsyncClient, where: str, url: str,
                  private_ok: bool) -> tuple[bytes, str]:
    """Download `url`, following up to MAX_REDIRECTS redirects, each hop's host checked."""
    hop = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        if private_ok:
            request = http.build_request("GET", hop)
        else:
            request = _to_address(http, hop, await _check_public(where, url, hop))
        reply = await http.send(request, stream=True)
        try:
            if reply.is_redirect and "location" in reply.headers:
                hop = hop.join(reply.headers["location"])  # relative to the name, not the IP
                if hop.scheme not in ("http", "https"):
                    raise _refused(where, url, f"redirected to a {hop.scheme} URL")
                continue
            return await _download(where, url, reply)
        finally:
            await reply.aclose()
    raise _refused(where, url, f"more than {MAX_REDIRECTS} redirects")


def _to_address(http: httpx.AsyncClient, hop: httpx.URL, address: Address) -> httpx.Request:
    """A GET of `hop` sent to `address` itself, as if by name: the Host header and the TLS
    server name (`sni_hostname`, which httpcore also verifies the certificate against) are
    the URL's. No lookup happens after the check, so no second answer is ever used."""
    return http.build_request("GET", hop.copy_with(host=str(address)),
                              headers={"Host": hop.netloc.decode("ascii")},
                              extensions={"sni_hostname": hop.raw_host.decode("ascii")})


async def _check_public(where: str, url: str, hop: httpx.URL) -> Address:
    """The address to connect to; refuses a host any of whose addresses is internal (a name
    may have several, and the connection must not pick another one than was checked)."""
    port = hop.port or (443 if hop.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(hop.host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        raise _refused(where, url, f"cannot resolve {hop.host}: {exc}") from None
    addresses = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if kind := _internal(address):
            raise _refused(where, url, f"{hop.host} resolves to {address}, a {kind} "
                           "address; the gateway fetches images from public addresses "
                           "only (LMQ_GATEWAY_FETCH_PRIVATE_IMAGES=true allows others)")
        addresses.append(address)
    if not addresses:
        raise _refused(where, url, f"cannot resolve {hop.host}: no address")
    return addresses[0]


def _internal(address: Address) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    for kind, flag in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                       ("multicast", address.is_multicast),
                       ("unspecified", address.is_unspecified),  # 0.0.0.0 is private too
                       ("private", address.is_private), ("reserved", address.is_reserved),
                       # e.g. 100.64.0.0/10, carrier-grade NAT: neither private nor public
                       ("non-global", not address.is_global)):
        if flag:
            return kind
    return None


async def _download(where: str, url: str, reply: httpx.Response) -> tuple[bytes, str]:
    if reply.status_code != 200:
        raise _refused(where, url, f"HTTP {reply.status_code}")
    mime = reply.headers.get("content-type", "").split(";")[0].strip().lower()
    if not mime.startswith("image/"):
        raise _refused(where, url, f"not an image (content-type {mime or 'missing'!r})")
    declared = int(reply.headers.get("content-length") or 0)
    if declared > MAX_IMAGE_BYTES:
        raise _refused(where, url, _too_big(declared))
    data = bytearray()
    async for chunk in reply.aiter_bytes():
        data += chunk
        if len(data) > MAX_IMAGE_BYTES:
            raise _refused(where, url, _too_big(len(data)))
    return bytes(data), mime


def _too_big(size: int) -> str:
    return f"{size} bytes or more, over the limit of {MAX_IMAGE_BYTES} bytes per image"


def _refused(where: str, url: str, reason: str) -> ApiError:
    return bad_request(f"{where}: cannot use the image at {url}: {reason}", "messages")
