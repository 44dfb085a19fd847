"""Where a turn's attachment may come from, and reading it within limits.

An ``attachment_uri`` is chosen by whoever starts a turn, but it is read by the worker,
with the worker's file system and network position. Unchecked, that lets any client read
the worker's files or reach what only the worker can reach (a cloud metadata service,
an admin port on localhost, the private network) and get the answer uploaded to the
genie, where the client can read it back. So every source is opt-in by the operator:

* ``file://`` (or a plain absolute path): only below ``GENIE_ATTACHMENT_DIRS``.
* ``https://`` (``http://`` only with ``GENIE_ATTACHMENT_ALLOW_HTTP``): only to hosts in
  ``GENIE_ATTACHMENT_HOSTS`` (none by default: no URL attachments at all), only to
  publicly routable addresses after DNS resolution (unless
  ``GENIE_ATTACHMENT_ALLOW_PRIVATE_NETWORKS``), with every redirect checked the same way,
  and within a size and a total time limit.

Every refusal is a non-retryable ``ApplicationError`` of type ``AttachmentRefused``. Its
message names the origin (scheme, host, port) at most: paths, query strings and userinfo
of a URL may carry tokens (pre-signed URLs do), and a response body is never quoted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlparse

import httpx
from temporalio.exceptions import ApplicationError

from activities._errors import ATTACHMENT_REFUSED, ATTACHMENT_UNAVAILABLE

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""``(host, port) -> addresses``; the system resolver unless a test injects one."""

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""The API's upload limit; larger files are refused before (or while) reading them."""
DEFAULT_FETCH_SECONDS = 30.0
"""Total time for fetching one URL attachment: DNS, every redirect and the whole body."""
MAX_REDIRECTS = 5
"""Redirects followed per attachment; each one is checked like the first URL."""
DEFAULT_PORTS = {"http": 80, "https": 443}
MIN_PORT, MAX_PORT = 1, 65535
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that say "try again later"; any other non-2xx is final."""
ANY_HOST = "*"
"""``GENIE_ATTACHMENT_HOSTS`` entry allowing every host (addresses are still checked)."""
SUFFIX_WILDCARD = "*."
"""``*.example.com`` allows ``a.example.com`` and ``a.b.example.com``, not ``example.com``."""
DEFAULT_FILENAME = "attachment"
MAX_FILENAME_CHARS = 255
USER_AGENT = "genie-worker attachment fetcher"
LOCAL_FILE_HOSTS = frozenset({"", "localhost"})
"""``file://`` URIs name a file of this machine; ``file://otherhost/...`` is refused."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6 (a unique-local address)
        "100.100.100.200",  # Alibaba Cloud (shared address space)
    )
)
"""Cloud instance-metadata endpoints: refused even where private networks are allowed,
since they hand out the worker's own credentials."""
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_MASK = 0xFFFFFFFF


def refuse(message: str) -> NoReturn:
    # "from None" everywhere: Temporal records an exception's context as the failure's
    # cause, and an httpx error's text may quote the URL with its query string.
    raise ApplicationError(message, type=ATTACHMENT_REFUSED, non_retryable=True) from None


def _unavailable(message: str) -> NoReturn:
    """A failure that may pass (connection reset, 503): the activity's retry policy applies."""
    raise ApplicationError(message, type=ATTACHMENT_UNAVAILABLE) from None


# ---------------------------------------------------------------------- the rules


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, IP addresses in their canonical text form.

    ``GOOD.com.`` and ``good.com`` are one host to DNS, so they must be one host to the
    allowlist too. Non-ASCII names must already be IDNA (``xn--...``), as httpx sends them.
    """
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host.endswith("."):
        host = host[:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def is_numeric_host(host: str) -> bool:
    """Does a name that is not a canonical IP address still read as an IPv4 address?

    ``2130706433``, ``0x7f.1``, ``017700000001`` and ``127.1`` all reach 127.0.0.1 through
    ``inet_aton``. No DNS name ends in a numeric label (WHATWG's "ends in a number" rule),
    so such a host is refused outright instead of being resolved.
    """
    last = normalize_host(host).rsplit(".", 1)[-1]
    return bool(last) and (last.isdigit() or last.startswith("0x"))


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Exact names/addresses, ``*.suffix`` patterns, or ``*`` for any host."""
    host = normalize_host(host)
    for pattern in patterns:
        if pattern in (ANY_HOST, host):
            return True
        if pattern.startswith(SUFFIX_WILDCARD) and host.endswith(pattern[1:]):
            return True
    return False


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to (mapped, 6to4, Teredo, NAT64, compatible).

    ``::ffff:127.0.0.1`` connects to 127.0.0.1 and the transition prefixes route to the
    IPv4 address inside, so the inner address is what has to pass the rules.
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    inner: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        inner.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        inner.append(ip.sixtofour)
    if ip.teredo is not None:
        inner.extend(ip.teredo)
    if ip in NAT64_PREFIX or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        inner.append(ipaddress.IPv4Address(int(ip) & IPV4_MASK))
    return inner


def address_refusal(ip: IPAddress, *, allow_private_networks: bool = False) -> str | None:
    """Why the worker must not connect to ``ip`` (``None``: it may).

    Unspecified (0.0.0.0 reaches this host on Linux), multicast, link-local and cloud
    metadata addresses are never attachment sources. Loopback, private, shared (CGNAT),
    reserved and documentation ranges are refused unless the operator allows private
    networks; otherwise only globally routable unicast addresses pass.
    """
    for inner in _embedded_ipv4(ip):
        reason = address_refusal(inner, allow_private_networks=allow_private_networks)
        if reason is not None:
            return reason
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if allow_private_networks:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for ``host`` (no duplicates, in order)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # An IPv6 link-local answer carries a zone ("fe80::1%eth0"); the rules ignore it.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def origin(url: httpx.URL) -> str:
    """What a message may say about a URL: scheme, host and port, never path or query."""
    port = f":{url.port}" if url.port else ""
    host = url.raw_host.decode("ascii", "replace")
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}{port}"


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs an attachment may be fetched from, and the limits of one fetch.

    The defaults allow nothing: URL attachments are off until the operator lists hosts.
    """

    hosts: tuple[str, ...] = ()
    """Exact host names or addresses, ``*.suffix`` patterns, or ``*``."""
    allow_http: bool = False
    allow_private_networks: bool = False
    timeout_seconds: float = DEFAULT_FETCH_SECONDS
    max_redirects: int = MAX_REDIRECTS
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Entries are compared with normalized hosts, so they are normalized the same way.
        object.__setattr__(self, "hosts", tuple(normalize_host(h) for h in self.hosts))

    def check_url(self, url: httpx.URL) -> str:
        """Refuse a URL by its text alone; its host (IDNA, normalized) if it may be tried."""
        if url.scheme not in DEFAULT_PORTS:
            # Only a redirect gets here with another scheme (the reader routes the rest).
            refuse(f"attachment URL has unsupported scheme {url.scheme[:16]!r}")
        if url.scheme == "http" and not self.allow_http:
            refuse(
                f"{origin(url)}: plain http attachments are off (use https, or set "
                "GENIE_ATTACHMENT_ALLOW_HTTP=true)"
            )
        if url.userinfo:
            # "https://good.com@127.0.0.1/" reads like good.com but goes to 127.0.0.1; and
            # credentials in the URL would be sent along. Neither is wanted.
            refuse(f"{origin(url)}: attachment URLs must not contain user info")
        host = normalize_host(url.raw_host.decode("ascii", "replace"))
        if not host:
            refuse("attachment URL has no host")
        if url.port is not None and not MIN_PORT <= url.port <= MAX_PORT:
            refuse("attachment URL has an invalid port")
        if not self.hosts:
            refuse(f"{origin(url)}: URL attachments are off (GENIE_ATTACHMENT_HOSTS is empty)")
        if is_numeric_host(host) and not _is_ip(host):
            refuse(f"{origin(url)}: an IP address written in a non-standard form")
        if not host_allowed(host, self.hosts):
            refuse(f"{origin(url)}: host is not in GENIE_ATTACHMENT_HOSTS")
        return host

    def check_address(self, url: httpx.URL, ip: IPAddress) -> None:
        reason = address_refusal(ip, allow_private_networks=self.allow_private_networks)
        if reason is not None:
            refuse(f"{origin(url)} resolves to {ip}, {reason}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------- reading


class AttachmentReader:
    """Reads ``attachment_uri`` values under the operator's policy."""

    def __init__(
        self,
        dirs: Sequence[Path] = (),
        urls: UrlPolicy | None = None,
        *,
        max_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        self._dirs = [d.resolve() for d in dirs]
        self._urls = urls or UrlPolicy()
        self._max_bytes = max_bytes

    async def read(self, uri: str) -> tuple[str, bytes]:
        """``(filename, content)``, or an ``ApplicationError`` saying why not."""
        scheme = urlparse(uri).scheme.lower()
        if scheme in ("http", "https"):
            return await fetch_url(uri, self._urls, max_bytes=self._max_bytes)
        if scheme in ("file", ""):
            # Disk reads of up to 20 MB would stall every stream on this event loop.
            return await asyncio.to_thread(self._read_file, uri)
        refuse(f"unsupported attachment scheme {scheme[:16]!r} (use file:// or https://)")

    def _read_file(self, uri: str) -> tuple[str, bytes]:
        parsed = urlparse(uri)
        if parsed.netloc.lower() not in LOCAL_FILE_HOSTS:
            refuse("file:// attachments must name a file on the worker (no host)")
        path = Path(unquote(parsed.path))
        if not path.is_absolute():
            refuse("attachment paths must be absolute")
        path = path.resolve()  # symlinks and ".." are judged by where they lead
        if not any(path.is_relative_to(d) for d in self._dirs):
            refuse(f"{path} is outside GENIE_ATTACHMENT_DIRS")
        max_bytes = self._max_bytes
        try:
            # O_NONBLOCK: opening a FIFO put there must not hang the activity; O_NOFOLLOW:
            # the resolved path has no symlink left, so one appearing now is a swap.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            refuse(f"{path} is not a readable file")
        try:
            # Judged by the opened file itself, so a swap after the checks changes nothing.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                refuse(f"{path} is not a readable file")
            if st.st_size > max_bytes:
                refuse(f"{path} is larger than {max_bytes} bytes")
            with os.fdopen(os.dup(fd), "rb") as f:
                content = f.read(max_bytes + 1)  # the file may grow after fstat
        finally:
            os.close(fd)
        if len(content) > max_bytes:
            refuse(f"{path} is larger than {max_bytes} bytes")
        return path.name, content


async def fetch_url(
    uri: str, policy: UrlPolicy, *, max_bytes: int = MAX_UPLOAD_BYTES
) -> tuple[str, bytes]:
    """GET ``uri`` under ``policy``, following (and checking) redirects by hand."""
    try:
        url = httpx.URL(uri)
    except httpx.InvalidURL:
        refuse("attachment URL is not a valid URL")
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            content = await _fetch(url, policy, max_bytes)
    except TimeoutError:
        refuse(f"{origin(url)}: attachment not fetched within {policy.timeout_seconds:g} s")
    return _filename(url), content


async def _fetch(url: httpx.URL, policy: UrlPolicy, max_bytes: int) -> bytes:
    # trust_env=False: an HTTP(S)_PROXY from the environment would make the proxy resolve
    # and connect, and every address check here would be moot.
    async with httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(policy.timeout_seconds),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    ) as http:
        for _hop in range(policy.max_redirects + 1):
            url = url.copy_with(fragment=None)
            host = policy.check_url(url)
            port = url.port or DEFAULT_PORTS[url.scheme]
            addresses = await _resolve(url, host, port, policy)
            got = await _get(http, url, host, addresses, max_bytes)
            if isinstance(got, bytes):
                return got
            url = got
    refuse(f"{origin(url)}: more than {policy.max_redirects} redirects")


async def _resolve(url: httpx.URL, host: str, port: int, policy: UrlPolicy) -> list[IPAddress]:
    """Resolve once and check every answer.

    All answers must pass, not just one: the connection below may go to any of them, and
    a name answering with both a public and a private address is someone probing.
    """
    if _is_ip(host):
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    else:
        try:
            addresses = await policy.resolver(host, port)
        except socket.gaierror as e:
            if e.errno == socket.EAI_NONAME:
                refuse(f"{origin(url)}: the host name does not resolve")
            _unavailable(f"{origin(url)}: DNS lookup failed ({e.strerror})")
        if not addresses:
            refuse(f"{origin(url)}: the host name does not resolve")
    for ip in addresses:
        policy.check_address(url, ip)
    return addresses


async def _get(
    http: httpx.AsyncClient,
    url: httpx.URL,
    host: str,
    addresses: list[IPAddress],
    max_bytes: int,
) -> httpx.URL | bytes:
    """One hop: the body, or where it redirects to. Tries each checked address in turn
    until one accepts the connection (what a browser's resolver fallback would do)."""
    last = "no address"
    for ip in addresses:
        try:
            return await _get_from(http, url, host, ip, max_bytes)
        except httpx.ConnectError as e:
            if _is_certificate_error(e):
                refuse(f"{origin(url)}: TLS certificate verification failed")
            last = type(e).__name__  # the next address may answer
        except httpx.TimeoutException:
            raise TimeoutError from None  # the total time limit's refusal, one message
        except httpx.TransportError as e:
            _unavailable(f"{origin(url)}: the transfer failed ({type(e).__name__})")
    _unavailable(f"{origin(url)}: could not connect ({last})")


async def _get_from(
    http: httpx.AsyncClient, url: httpx.URL, host: str, ip: IPAddress, max_bytes: int
) -> httpx.URL | bytes:
    """GET ``url`` from the address ``ip``, which the rules have passed.

    Pinning (the DNS-rebinding defence): the request is sent to the checked IP address
    itself, with the name only in the ``Host`` header and, for https, in the TLS SNI and
    the certificate check (httpcore's ``sni_hostname`` extension sets both). httpx so
    never resolves the name again, and a resolver that answers "public" to the check and
    "127.0.0.1" to the connection gains nothing. The peer address of the connection is
    compared with the checked one too, before a byte of the body is read.
    """
    pinned = url.copy_with(host=str(ip))
    host_header = f"[{host}]" if ":" in host else host
    if url.port:
        host_header += f":{url.port}"
    extensions = {} if _is_ip(host) else {"sni_hostname": host}
    async with http.stream(
        "GET", pinned, headers={"Host": host_header}, extensions=extensions
    ) as r:
        _check_peer(r, url, ip)
        if r.status_code in REDIRECT_STATUSES:
            return _redirect_target(r, url)
        if r.status_code in RETRYABLE_STATUSES:
            _unavailable(f"{origin(url)} answered {r.status_code}")
        if not r.is_success:
            refuse(f"{origin(url)} answered {r.status_code}")
        encoding = r.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # The raw bytes are what is uploaded; decoding them here could turn a small
            # response into a huge one before the size check sees it.
            refuse(f"{origin(url)} answered with Content-Encoding {encoding[:32]!r}")
        declared = r.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            refuse(f"{origin(url)}: attachment is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in r.aiter_raw():
            size += len(chunk)
            if size > max_bytes:
                refuse(f"{origin(url)}: attachment is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _redirect_target(r: httpx.Response, url: httpx.URL) -> httpx.URL:
    location = r.headers.get("location")
    if not location:
        refuse(f"{origin(url)} answered {r.status_code} without a Location")
    try:
        return url.join(location)
    except httpx.InvalidURL:
        refuse(f"{origin(url)} redirected to an invalid URL")


def _check_peer(r: httpx.Response, url: httpx.URL, ip: IPAddress) -> None:
    """The connection really is to ``ip`` (belt and braces for the pinning above)."""
    stream = r.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        refuse(f"{origin(url)}: could not verify the connected address")
    try:
        connected = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        refuse(f"{origin(url)}: could not verify the connected address")
    if connected != ip:
        refuse(f"{origin(url)}: connected to {connected}, not the checked {ip}")


def _is_certificate_error(e: BaseException) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _filename(url: httpx.URL) -> str:
    """The last path segment the caller named, made safe for a multipart header."""
    name = unquote(url.path).rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '"\\')
    return name.strip()[:MAX_FILENAME_CHARS] or DEFAULT_FILENAME
