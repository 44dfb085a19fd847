"""What the inbox's pages and its JSON API share: the app's state (``Inbox``) and each
request's context (``Ctx``), the wrappers that load the session and the identity and set
the cookie (``page``, ``api``), rendering, the CSRF check, the strict security headers,
and the helpers both kinds of handler call (ids, filters, rate-limit wording, the auth-link
rules). The page handlers are in ``inbox._pages``, the API's in ``inbox._api``; this
module imports neither, so both can import it, and ``inbox._app`` wires them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError

from genie_api import inert
from geniectl import NotFound, Refused
from inbox._auth import Authenticator, Identity, Unauthenticated
from inbox._data import Item, Reader, Unavailable, safe_url, segment
from inbox._decide import Decider, Kind, Verdict
from inbox._explain import Explanation, explain, utc
from inbox._limit import RateLimiter, retry_after
from inbox._session import COOKIE, CSRF_FIELD, Session, SessionCodec
from inbox._settings import InboxConfig
from workflows import ConversationStatus, errors
from workflows.models import MAX_ID_CHARS, AuthLink, DecisionRecorded

log = logging.getLogger("genie_inbox")

HERE = Path(__file__).resolve().parent
MAX_FILTER_CHARS = MAX_ID_CHARS


SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Auth links are credentials of a kind: never leak a page URL to the sites linked.
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Strict headers on every response: no inline script, no framing, no caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -------------------------------------------------------------------- the app's parts


class BadRequest(Exception):
    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type, message


@dataclass
class Inbox:
    config: InboxConfig
    reader: Reader
    decider: Decider
    auth: Authenticator
    codec: SessionCodec
    templates: Jinja2Templates
    limiter: RateLimiter

    @property
    def dev(self) -> bool:
        return self.config.auth == "dev"

    async def decide(
        self, me: Identity, wid: str, kind: Kind, ref: str, verdict: Verdict, reason: str | None
    ) -> DecisionRecorded:
        """Send the decision; the shared pending listing is stale after it, either way."""
        try:
            return await self.decider.decide(me, wid, kind, ref, verdict, reason)
        finally:
            self.reader.invalidate()

    def limited(self, me: Identity) -> float:
        """Spend one of ``me``'s POSTs that reach a workflow: 0, or the seconds to wait."""
        return self.limiter.take(me.name)

    async def auth_link(self, wid: str, ref: str) -> AuthLink:
        """A fresh link (an update: the workflow asks the API); ``Unavailable`` if the
        conversation does not answer in time. Show it only through ``shown_link``."""
        try:
            async with asyncio.timeout(self.decider.timeout):
                return await self.reader.api.auth_link(wid, ref)
        except TimeoutError:
            raise Unavailable(f"no answer within {self.decider.timeout:g}s") from None
        except RPCError as e:
            raise Unavailable(f"Temporal answered {e.status.name if e.status else e}") from None
        finally:
            self.reader.invalidate()


@dataclass
class Ctx:
    inbox: Inbox
    session: Session
    me: Identity | None
    auth_error: str | None = None

    @property
    def user(self) -> Identity:
        assert self.me is not None
        return self.me


Handler = Callable[[Request, Ctx], Awaitable[Response]]


def _fmt_left(deadline: datetime | None, now: datetime) -> str:
    if deadline is None:
        return ""
    seconds = int((deadline - now).total_seconds())
    if seconds <= 0:
        return "deadline passed"
    return f"{_span(seconds)} left"


def _fmt_ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return ""
    return f"{_span(max(0, int((now - t).total_seconds())))} ago"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _shown(value: object) -> object:
    if isinstance(value, str) and not isinstance(value, Markup):
        return inert(value)
    return value


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.astimezone(UTC).isoformat()


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is HTML-escaped unless a template says otherwise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Every value shown, parameters included, with characters that would reorder or
        # hide text (U+202E, zero-width space) written as their escape: an approver sees
        # what the genie sent, not what it made the page display.
        finalize=_shown,
    )
    env.filters.update(utc=utc, pretty=_pretty, iso=_iso, seg=segment)
    env.globals.update(left=_fmt_left, ago=_fmt_ago)
    return Jinja2Templates(env=env)


def valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


# -------------------------------------------------------------------- wrappers


def _wants_secure(inbox: Inbox, request: Request) -> bool:
    s = inbox.config.settings.secure_cookies
    return s if s is not None else request.url.scheme == "https"


def _finish(inbox: Inbox, request: Request, session: Session, response: Response) -> Response:
    if session.dirty:
        value = inbox.codec.dump(session)
        if value is not None:
            response.set_cookie(
                COOKIE,
                value,
                max_age=inbox.codec.max_age,
                httponly=True,
                samesite="lax",
                secure=_wants_secure(inbox, request),
                path="/",
            )
    return response


async def _context(request: Request) -> Ctx:
    inbox: Inbox = request.app.state.inbox
    session = inbox.codec.load(request.cookies.get(COOKIE))
    try:
        me = await inbox.auth.identify(request, session)
        return Ctx(inbox, session, me)
    except Unauthenticated as e:
        if session.jwt and request.headers.get("authorization") is None:
            session.logout()  # a stored token that no longer holds: drop it
        return Ctx(inbox, session, None, str(e))


def page(handler: Handler, *, login: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """An HTML route: session loaded, identity required (else the login page)."""

    async def endpoint(request: Request) -> Response:
        ctx = await _context(request)
        inbox = ctx.inbox
        if login and ctx.me is None:
            if inbox.config.auth == "proxy" or request.headers.get("authorization"):
                response = render(
                    request,
                    ctx,
                    "error.html",
                    http_status=401,
                    title="Not signed in",
                    message=ctx.auth_error or "no identity came with the request",
                )
            elif request.url.path == "/pending/fragment":
                response = HTMLResponse("", status_code=401)
            else:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = login_page(request, ctx, target, ctx.auth_error, http_status=401)
        else:
            response = await handler(request, ctx)
        return _finish(inbox, request, ctx.session, response)

    return endpoint


def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A JSON route: identity required (401 with why), bad input answered as JSON."""

    async def endpoint(request: Request) -> Response:
        ctx = await _context(request)
        if ctx.me is None:
            response: Response = JSONResponse(
                api_error("Unauthenticated", ctx.auth_error or "log in or send a bearer token"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"} if ctx.inbox.config.auth == "jwt" else {},
            )
        else:
            try:
                response = await handler(request, ctx)
            except BadRequest as e:
                response = JSONResponse(api_error(e.type, e.message), status_code=e.status)
        return _finish(ctx.inbox, request, ctx.session, response)

    return endpoint


def api_error(type: str, message: str, **more: Any) -> dict[str, Any]:
    """The JSON API's error body: ``{"error": {"type", "message", ...}}``."""
    return {"error": {"type": type, "message": message, **more}}


def render(
    request: Request, ctx: Ctx, template: str, *, http_status: int = 200, **values: Any
) -> Response:
    inbox = ctx.inbox
    base = {
        "me": ctx.me,
        "dev_mode": inbox.dev,
        "auth_mode": inbox.config.auth,
        "csrf": ctx.session.csrf,
        "csrf_field": CSRF_FIELD,
        "signing_key_id": inbox.config.signing_key_id,
        "now": datetime.now(UTC),
        "refresh_seconds": inbox.config.settings.refresh_seconds,
        "can_logout": ctx.session.jwt is not None or ctx.session.dev_name is not None,
    }
    return inbox.templates.TemplateResponse(
        request, template, {**base, **values}, status_code=http_status
    )


def login_page(
    request: Request, ctx: Ctx, target: str, error: str | None, *, http_status: int = 200
) -> Response:
    return render(request, ctx, "login.html", http_status=http_status, next=target, error=error)


# -------------------------------------------------------------------- shared by pages and the API


def ids(request: Request) -> tuple[str, str]:
    wid = str(request.path_params["wid"])
    ref = str(request.path_params["ref"])
    return wid, ref


def filters(request: Request) -> tuple[str | None, str | None]:
    g = (request.query_params.get("genie") or "").strip()[:MAX_FILTER_CHARS] or None
    s = (request.query_params.get("skill") or "").strip()[:MAX_FILTER_CHARS] or None
    return g, s


def csrf_ok(ctx: Ctx, token: str | None) -> bool:
    return ctx.session.check_csrf(token)


def logged(ctx: Ctx, rec: DecisionRecorded, wid: str) -> None:
    log.info("%s %s in %s by %s (%s)", rec.decision, rec.id, wid, rec.decided_by, ctx.user.method)


def slow_down(wait: float) -> str:
    return (
        f"You sent too many decisions or link requests in a short time; nothing was sent to "
        f"the conversation. Try again in {retry_after(wait)} s."
    )


def shown_link(link: AuthLink) -> AuthLink:
    """``link`` as a page shows it or the API returns it: a URL that is not plain http(s)
    (``javascript:``, ``data:``…) is dropped and the link is ``unavailable``."""
    if link.url is not None and safe_url(link.url) is None:
        return link.model_copy(update={"url": None, "status": "unavailable"})
    return link


def link_refusal(me: Identity, ref: str, item: Item | None) -> Explanation | None:
    """Why ``me`` may not see or refresh this connection's auth link, or None. An auth
    link is a credential: the rule is the one for deciding (``Item.can_decide``)."""
    if item is None:
        return explain(errors.UNKNOWN_ATTEMPT_ID, f"no pending connection {ref}", me=me, ref=ref)
    if item.can_decide:
        return None
    if item.why_not:
        why = item.why_not
    elif item.decision is not None:
        why = f"it is being decided ({item.decision.verdict} by {item.decision.actor})"
    else:
        why = "you may not decide it"
    return Explanation(
        "NotAllowed",
        "Not allowed",
        "Only those who may decide this connection may see or refresh its auth link: "
        f"{why}. Nothing was sent to the conversation.",
        403,
        why,
    )


async def item_state(
    ctx: Ctx, wid: str, kind: Kind, ref: str
) -> tuple[ConversationStatus, Item | None]:
    st, items = await ctx.inbox.reader.items(wid, ctx.user)
    item = next((i for i in items if i.kind == kind and i.ref == ref), None)
    return st, item


async def explained(ctx: Ctx, e: Refused, wid: str, ref: str) -> Explanation:
    st: ConversationStatus | None = None
    with contextlib.suppress(NotFound, Unavailable):
        st = await ctx.inbox.reader.status(wid)
    return explain(e.type, e.message, me=ctx.user, ref=ref, status=st)
