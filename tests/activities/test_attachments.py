"""Attachment policy: which files and URLs the worker reads for a turn, and within what.

The rules are tested as pure functions first (many address and URL forms, no network),
then against a real HTTP server on 127.0.0.1: what the server saw is the proof that a
refused fetch never left the worker. No test connects anywhere but loopback; public
addresses appear only as inputs to the classifier or as fake DNS answers that are
refused before any connection.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities._attachments as attachments
from activities import (
    ATTACHMENT_REFUSED,
    ATTACHMENT_UNAVAILABLE,
    GenieActivities,
    UrlPolicy,
)
from activities._attachments import (
    AttachmentReader,
    IPAddress,
    address_refusal,
    fetch_url,
    host_allowed,
    is_numeric_host,
    normalize_host,
)
from activities.models import UploadAttachmentInput
from genie_api import ApiKeyAuth, GenieClient
from tests.activities.loopback_server import (
    CREDENTIALS,
    ERROR_BODY,
    FILE_BODY,
    LOOPBACK,
    LoopbackServer,
)
from tests.services import free_port

SECRET = "tok-5ecret-in-the-url"
SMALL_LIMIT = 1000
"""A byte limit for size tests, so they need not move 20 MB."""
HOSTS = ("files.example.com", "*.cdn.example.com")


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def srv(server: LoopbackServer) -> LoopbackServer:
    server.forget()
    return server


def loopback_policy(**overrides: object) -> UrlPolicy:
    """What a test deployment would set to serve attachments from 127.0.0.1."""
    settings: dict[str, object] = {
        "hosts": (LOOPBACK,),
        "allow_http": True,
        "allow_private_networks": True,
        **overrides,
    }
    return UrlPolicy(**settings)  # type: ignore[arg-type]


def fake_dns(answers: dict[str, list[str]]) -> tuple[attachments.Resolver, list[str]]:
    """A resolver answering from ``answers``, and the list of names it was asked for."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve, asked


async def refused(uri: str, policy: UrlPolicy, *, max_bytes: int = SMALL_LIMIT) -> str:
    """The refusal's message; fails unless the fetch is refused for good."""
    with pytest.raises(ApplicationError) as e:
        await fetch_url(uri, policy, max_bytes=max_bytes)
    assert e.value.type == ATTACHMENT_REFUSED, e.value
    assert e.value.non_retryable
    assert e.value.__cause__ is None and e.value.__suppress_context__
    return e.value.message


# ---------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("10.255.255.254", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "not a globally routable"),  # shared address space (CGNAT)
        ("192.0.2.1", "private"),  # documentation
        ("2001:db8::1", "private"),  # documentation
        ("240.0.0.1", "private"),  # reserved (Python counts it private too)
        ("255.255.255.255", "private"),
        ("224.0.0.1", "multicast"),
        ("233.252.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "metadata"),  # 6to4 of 169.254.169.254
        ("::7f00:1", "loopback"),  # IPv4-compatible 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    why = address_refusal(ipaddress.ip_address(address))
    assert why is not None and reason in why, why


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", True),
        ("fd00::1", True),
        ("100.64.0.1", True),
        # Never a place to fetch an attachment from, whatever the operator allowed:
        ("169.254.169.254", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:169.254.169.254", False),
    ],
)
def test_allowing_private_networks_keeps_metadata_and_link_local_out(
    address: str, allowed: bool
) -> None:
    why = address_refusal(ipaddress.ip_address(address), allow_private_networks=True)
    assert (why is None) == allowed, why


# ---------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("Files.Example.COM", "files.example.com"),
        ("files.example.com.", "files.example.com"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
    ],
)
def test_hosts_are_normalized(host: str, normal: str) -> None:
    assert normalize_host(host) == normal


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001", "foo.123"]
)
def test_numeric_hosts_are_recognised(host: str) -> None:
    assert is_numeric_host(host)


@pytest.mark.parametrize("host", ["files.example.com", "1password.com", "x1.y2"])
def test_names_are_not_numeric(host: str) -> None:
    assert not is_numeric_host(host)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("files.example.com", True),
        ("FILES.example.com.", True),
        ("a.cdn.example.com", True),
        ("a.b.cdn.example.com", True),
        ("cdn.example.com", False),  # "*.x" is the subdomains of x, not x
        ("evilcdn.example.com", False),
        ("files.example.com.evil.net", False),
        ("example.com", False),
        ("127.0.0.1", False),
    ],
)
def test_host_allowlist(host: str, allowed: bool) -> None:
    assert host_allowed(host, HOSTS) == allowed


def test_star_allows_any_host() -> None:
    assert host_allowed("anything.example.org", ("*",))


# ---------------------------------------------------------------------- URLs, no network


@pytest.mark.parametrize(
    ("uri", "policy", "why"),
    [
        ("https://files.example.com/a", UrlPolicy(), "URL attachments are off"),
        ("http://files.example.com/a", UrlPolicy(hosts=HOSTS), "plain http"),
        (
            "http://127.0.0.1/latest/meta-data/iam",
            UrlPolicy(hosts=("*",)),
            "plain http",
        ),
        ("https://evil.example.org/a", UrlPolicy(hosts=HOSTS), "not in GENIE_ATTACHMENT_HOSTS"),
        ("https://cdn.example.com/a", UrlPolicy(hosts=HOSTS), "not in GENIE_ATTACHMENT_HOSTS"),
        # Userinfo makes an allowed name the *user*, and 127.0.0.1 the host.
        ("https://files.example.com@127.0.0.1/", UrlPolicy(hosts=("*",)), "user info"),
        (f"https://user:{SECRET}@files.example.com/", UrlPolicy(hosts=HOSTS), "user info"),
        ("https://2130706433/", UrlPolicy(hosts=("*",)), "non-standard form"),
        ("https://0x7f.1/", UrlPolicy(hosts=("*",)), "non-standard form"),
        ("https://017700000001/", UrlPolicy(hosts=("*",)), "non-standard form"),
        ("https://127.1/", UrlPolicy(hosts=("*",)), "non-standard form"),
        ("https://127.0.0.1/", UrlPolicy(hosts=("*",)), "loopback"),
        ("https://0.0.0.0/", UrlPolicy(hosts=("*",)), "unspecified"),
        ("https://[::1]/", UrlPolicy(hosts=("*",)), "loopback"),
        ("https://[::ffff:127.0.0.1]/", UrlPolicy(hosts=("*",)), "loopback"),
        ("https://[::ffff:7f00:1]/", UrlPolicy(hosts=("*",)), "loopback"),
        ("https://169.254.169.254/latest/meta-data/", UrlPolicy(hosts=("*",)), "metadata"),
        ("https://10.0.0.8/", UrlPolicy(hosts=("*",)), "private"),
        ("https://[fd00::1]/", UrlPolicy(hosts=("*",)), "private"),
        # An allowlisted IP literal is still checked like any address.
        ("https://10.0.0.8/", UrlPolicy(hosts=("10.0.0.8",)), "private"),
        ("https://files.example.com:99999/", UrlPolicy(hosts=HOSTS), "invalid port"),
        ("https://files.example.com:0/", UrlPolicy(hosts=HOSTS), "invalid port"),
        ("https://files.example.com:x/", UrlPolicy(hosts=HOSTS), "not a valid URL"),
    ],
)
async def test_urls_refused_before_any_connection(uri: str, policy: UrlPolicy, why: str) -> None:
    # Refused by the URL's text, or by the address an IP literal names: never resolved,
    # never connected to.
    async def no_dns(host: str, port: int) -> list[IPAddress]:
        raise AssertionError(f"{host} must not be resolved")

    assert why in await refused(uri, dataclasses.replace(policy, resolver=no_dns))


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        (["127.0.0.1"], "loopback"),
        (["169.254.169.254"], "metadata"),
        (["10.1.2.3"], "private"),
        (["::1"], "loopback"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["fd00::1"], "private"),
        # One bad answer among good ones is enough: the connection could go to any.
        (["93.184.215.14", "10.0.0.1"], "private"),
        (["2606:4700:4700::1111", "fe80::1"], "link-local"),
    ],
)
async def test_names_resolving_to_non_public_addresses_are_refused(
    answers: list[str], why: str
) -> None:
    resolve, asked = fake_dns({"files.example.com": answers})
    policy = UrlPolicy(hosts=HOSTS, resolver=resolve)
    message = await refused("https://FILES.example.com./report.pdf", policy)
    assert why in message
    assert asked == ["files.example.com"]


async def test_messages_never_carry_path_query_or_userinfo() -> None:
    resolve, _ = fake_dns({"files.example.com": ["10.0.0.1"]})
    policy = UrlPolicy(hosts=HOSTS, resolver=resolve)
    message = await refused(f"https://files.example.com/{SECRET}/a?sig={SECRET}", policy)
    assert message.startswith("https://files.example.com resolves to 10.0.0.1"), message
    assert SECRET not in message
    message = await refused(f"https://me:{SECRET}@files.example.com/", policy)
    assert SECRET not in message


async def test_unknown_names_are_refused() -> None:
    async def nxdomain(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    policy = UrlPolicy(hosts=HOSTS, resolver=nxdomain)
    assert "does not resolve" in await refused("https://files.example.com/x", policy)


# ---------------------------------------------------------------------- real HTTP


async def test_loopback_is_refused_by_default_even_when_listed(srv: LoopbackServer) -> None:
    policy = UrlPolicy(hosts=(LOOPBACK,), allow_http=True)
    why = await refused(f"{srv.base_url}/latest/meta-data/iam", policy)
    assert "loopback" in why
    assert srv.seen == []


async def test_default_policy_fetches_nothing(srv: LoopbackServer) -> None:
    reader = AttachmentReader()
    for uri in (f"{srv.base_url}/latest/meta-data/iam", f"https://{LOOPBACK}:{srv.port}/"):
        with pytest.raises(ApplicationError) as e:
            await reader.read(uri)
        assert e.value.type == ATTACHMENT_REFUSED and e.value.non_retryable
    assert srv.seen == []


async def test_allowed_fetch_when_private_networks_are_allowed(srv: LoopbackServer) -> None:
    name, content = await fetch_url(f"{srv.base_url}/files/q3%20report.txt?v=2", loopback_policy())
    assert (name, content) == ("q3 report.txt", FILE_BODY)
    assert [s.path for s in srv.seen] == ["/files/q3%20report.txt?v=2"]
    assert srv.seen[0].host == f"{LOOPBACK}:{srv.port}"


async def test_the_connection_goes_to_the_checked_address(srv: LoopbackServer) -> None:
    """Resolved once; the name travels only in the Host header (DNS rebinding)."""
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    policy = loopback_policy(hosts=("files.test",), resolver=rebinding)
    _, content = await fetch_url(f"http://files.test:{srv.port}/files/a.txt", policy)
    assert content == FILE_BODY
    assert asked == ["files.test"]
    assert srv.seen[0].host == f"files.test:{srv.port}"


async def test_redirect_to_loopback_is_refused_after_an_allowed_first_hop(
    srv: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first host passes every rule; the redirect target does not, and is not asked."""
    real = attachments.address_refusal
    public_stand_in = ipaddress.ip_address(LOOPBACK)

    # The only way to have a "public" first hop without leaving loopback: 127.0.0.1
    # plays the public host, every other loopback address stays loopback.
    def classify(ip: IPAddress, *, allow_private_networks: bool = False) -> str | None:
        if ip == public_stand_in:
            return None
        return real(ip, allow_private_networks=allow_private_networks)

    monkeypatch.setattr(attachments, "address_refusal", classify)
    resolve, _ = fake_dns({"files.test": [LOOPBACK]})
    policy = UrlPolicy(
        hosts=("files.test", "127.0.0.2", "::ffff:127.0.0.2", "*"),
        allow_http=True,
        resolver=resolve,
    )
    for target in (
        f"http://127.0.0.2:{srv.port}/latest/meta-data/iam",
        f"http://[::ffff:127.0.0.2]:{srv.port}/latest/meta-data/iam",
        f"http://2130706434:{srv.port}/latest/meta-data/iam",
    ):
        srv.forget()
        first = f"http://files.test:{srv.port}/redirect?to={quote(target, safe='')}"
        why = await refused(first, policy)
        assert "loopback" in why or "non-standard" in why, why
        assert [s.path.split("?")[0] for s in srv.seen] == ["/redirect"]


async def test_redirects_are_checked_like_the_first_url(srv: LoopbackServer) -> None:
    policy = loopback_policy()
    cases = {
        # Not on the allowlist (it resolves to loopback, which is allowed here).
        f"http://localhost:{srv.port}/latest/meta-data/iam": "not in GENIE_ATTACHMENT_HOSTS",
        f"http://me:{SECRET}@{LOOPBACK}:{srv.port}/latest/meta-data/iam": "user info",
        f"http://169.254.169.254:{srv.port}/latest/meta-data/iam": "not in GENIE_ATTACHMENT",
        "file:///etc/passwd": "unsupported scheme 'file'",
        "gopher://127.0.0.1:70/": "unsupported scheme",
    }
    for target, why in cases.items():
        srv.forget()
        uri = f"{srv.base_url}/redirect?to={quote(target, safe='')}&status=307"
        message = await refused(uri, policy)
        assert why in message, (target, message)
        assert SECRET not in message
        assert len(srv.seen) == 1, srv.seen
    srv.forget()
    https_only = loopback_policy(allow_http=False, hosts=("*",))
    assert "plain http" in await refused(f"{srv.base_url}/files/a", https_only)
    assert srv.seen == []


async def test_allowed_redirects_are_followed(srv: LoopbackServer) -> None:
    uri = f"{srv.base_url}/redirect?to={quote('/files/b.txt', safe='')}"
    name, content = await fetch_url(uri, loopback_policy())
    # The caller's URL names the file, not where it was redirected to.
    assert (name, content) == ("redirect", FILE_BODY)
    assert [s.path for s in srv.seen][1] == "/files/b.txt"


async def test_redirects_are_bounded(srv: LoopbackServer) -> None:
    why = await refused(f"{srv.base_url}/loop", loopback_policy(max_redirects=5))
    assert "more than 5 redirects" in why
    assert len(srv.seen) == 6
    srv.forget()
    assert "without a Location" in await refused(f"{srv.base_url}/no-location", loopback_policy())


async def test_oversize_declared_is_refused_before_the_body(srv: LoopbackServer) -> None:
    why = await refused(f"{srv.base_url}/big-declared?size={SMALL_LIMIT + 1}", loopback_policy())
    assert f"larger than {SMALL_LIMIT} bytes" in why


async def test_oversize_streamed_is_refused_while_reading(srv: LoopbackServer) -> None:
    # No Content-Length at all: the limit is enforced on the bytes as they arrive.
    size = 50 * SMALL_LIMIT
    why = await refused(f"{srv.base_url}/big-streamed?size={size}", loopback_policy())
    assert f"larger than {SMALL_LIMIT} bytes" in why
    _, content = await fetch_url(
        f"{srv.base_url}/big-streamed?size={SMALL_LIMIT}", loopback_policy(), max_bytes=SMALL_LIMIT
    )
    assert len(content) == SMALL_LIMIT


async def test_slow_server_times_out(srv: LoopbackServer) -> None:
    started = time.monotonic()
    why = await refused(f"{srv.base_url}/slow", loopback_policy(timeout_seconds=0.5))
    elapsed = time.monotonic() - started
    assert "not fetched within 0.5 s" in why
    assert elapsed < 3, elapsed


async def test_compressed_answers_are_refused(srv: LoopbackServer) -> None:
    assert "Content-Encoding 'gzip'" in await refused(f"{srv.base_url}/gzip", loopback_policy())


async def test_error_answers(srv: LoopbackServer) -> None:
    why = await refused(f"{srv.base_url}/status/404?sig={SECRET}", loopback_policy())
    assert why == f"{srv.base_url} answered 404"
    assert ERROR_BODY.decode() not in why
    # "Try again later" answers and connection failures are retried by the activity.
    for uri in (f"{srv.base_url}/status/503", f"http://{LOOPBACK}:{free_port()}/x"):
        with pytest.raises(ApplicationError) as e:
            await fetch_url(uri, loopback_policy())
        assert e.value.type == ATTACHMENT_UNAVAILABLE and not e.value.non_retryable
        assert e.value.__cause__ is None and e.value.__suppress_context__


def test_the_peer_address_is_checked() -> None:
    """If a connection ever landed elsewhere than the checked address, it is refused."""

    class Stream:
        def get_extra_info(self, info: str) -> object:
            return ("127.0.0.9", 80) if info == "server_addr" else None

    response = httpx.Response(200, extensions={"network_stream": Stream()})
    with pytest.raises(ApplicationError) as e:
        attachments._check_peer(
            response, httpx.URL("http://files.test/"), ipaddress.ip_address(LOOPBACK)
        )
    assert e.value.type == ATTACHMENT_REFUSED
    assert "connected to 127.0.0.9, not the checked 127.0.0.1" in e.value.message


# ---------------------------------------------------------------------- files


@pytest.fixture
def allowed_dir(tmp_path: Path) -> Path:
    d = tmp_path / "allowed"
    d.mkdir()
    return d


async def file_refused(reader: AttachmentReader, uri: str) -> str:
    with pytest.raises(ApplicationError) as e:
        await reader.read(uri)
    assert e.value.type == ATTACHMENT_REFUSED and e.value.non_retryable
    return e.value.message


async def test_files_inside_the_allowed_dirs_are_read(allowed_dir: Path) -> None:
    (allowed_dir / "notes.txt").write_bytes(FILE_BODY)
    reader = AttachmentReader([allowed_dir])
    assert await reader.read((allowed_dir / "notes.txt").as_uri()) == ("notes.txt", FILE_BODY)
    assert await reader.read(str(allowed_dir / "notes.txt")) == ("notes.txt", FILE_BODY)


async def test_files_outside_the_allowed_dirs_are_refused(
    allowed_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(CREDENTIALS)
    (allowed_dir / "link.txt").symlink_to(outside)
    reader = AttachmentReader([allowed_dir])
    for uri in (
        outside.as_uri(),
        (allowed_dir / "link.txt").as_uri(),  # judged by where it leads
        f"file://{allowed_dir}/../secret.txt",
    ):
        assert "outside GENIE_ATTACHMENT_DIRS" in await file_refused(reader, uri)
    assert "outside" in await file_refused(AttachmentReader(), outside.as_uri())
    assert "no host" in await file_refused(reader, f"file://otherhost{allowed_dir}/x")
    assert "absolute" in await file_refused(reader, "relative/notes.txt")
    assert "unsupported attachment scheme 'ftp'" in await file_refused(reader, "ftp://x/y")


async def test_special_and_oversize_files_are_refused(allowed_dir: Path) -> None:
    os.mkfifo(allowed_dir / "pipe")
    (allowed_dir / "big.bin").write_bytes(b"x" * (SMALL_LIMIT + 1))
    reader = AttachmentReader([allowed_dir], max_bytes=SMALL_LIMIT)
    # A FIFO would block a plain open() forever; it is refused at once.
    assert "not a readable file" in await file_refused(reader, str(allowed_dir / "pipe"))
    assert "not a readable file" in await file_refused(reader, str(allowed_dir))
    assert "not a readable file" in await file_refused(reader, str(allowed_dir / "missing"))
    assert f"larger than {SMALL_LIMIT}" in await file_refused(reader, str(allowed_dir / "big.bin"))


# ---------------------------------------------------------------------- the activity


async def test_the_upload_activity_refuses_the_metadata_url_by_default(
    srv: LoopbackServer,
) -> None:
    """The activity as the worker builds it with default settings: nothing is fetched,
    nothing is uploaded (the API client points nowhere, and is never called)."""
    async with GenieClient(f"http://{LOOPBACK}:{free_port()}", ApiKeyAuth("k")) as client:
        acts = GenieActivities(client)
        inp = UploadAttachmentInput(
            genie_handle="gin",
            user_id="u-1",
            conversation_id="c-1",
            attachment_uri=f"{srv.base_url}/latest/meta-data/iam",
        )
        with pytest.raises(ApplicationError) as e:
            await ActivityEnvironment().run(acts.upload_attachment, inp)
    assert e.value.type == ATTACHMENT_REFUSED and e.value.non_retryable
    assert srv.seen == []
