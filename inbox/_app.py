"""The inbox as a Starlette app: pages, a JSON API mirroring them, and ``/healthz``.

Every route that shows something only reads (visibility and queries: nothing is added to
any workflow's history); only POSTs decide, each as the authenticated approver, signed
when a key is configured. A POST carried by the browser's cookie alone (a page form, or a
script in the page) must also carry the session's CSRF token; a request that brings its
own bearer token needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import jinja2
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client
from temporalio.service import RPCError

from genie_config import connect_temporal
from geniectl import GenieConversations, NotFound, Refused
from inbox._auth import Authenticator, Identity, Unauthenticated, clean_name
from inbox._data import LISTING_CACHE_SECONDS, Item, Reader, Unavailable, safe_url, segment
from inbox._decide import Decider, Kind, Verdict
from inbox._explain import Explanation, explain, utc, who_decided
from inbox._limit import RateLimiter, retry_after
from inbox._session import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionCodec
from inbox._settings import InboxConfig
from workflows import ConversationStatus, Transcript, errors
from workflows.models import MAX_ID_CHARS, MAX_REASON_CHARS, AuthLink, DecisionRecorded

log = logging.getLogger("genie_inbox")

HERE = Path(__file__).resolve().parent
MAX_FORM_FIELDS = 10
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


# -------------------------------------------------------------------- request bodies


class SkillDecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: StrictBool
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


class ConnectionDecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["done", "reject"]
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


class BadRequest(Exception):
    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type, message


# -------------------------------------------------------------------- the app's parts


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
        conversation does not answer in time. Show it only through ``_shown_link``."""
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


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.astimezone(UTC).isoformat()


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is HTML-escaped unless a template says otherwise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(utc=utc, pretty=_pretty, iso=_iso, seg=segment)
    env.globals.update(left=_fmt_left, ago=_fmt_ago)
    return Jinja2Templates(env=env)


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no open redirect through the login page)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/pending"
    return value[:2000]


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
                _error("Unauthenticated", ctx.auth_error or "log in or send a bearer token"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"} if ctx.inbox.config.auth == "jwt" else {},
            )
        else:
            try:
                response = await handler(request, ctx)
            except BadRequest as e:
                response = JSONResponse(_error(e.type, e.message), status_code=e.status)
        return _finish(ctx.inbox, request, ctx.session, response)

    return endpoint


def _error(type: str, message: str, **more: Any) -> dict[str, Any]:
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


async def _form(request: Request) -> FormData:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise BadRequest(415, "UnsupportedMediaType", "send a form")
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)


async def _json(request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(415, "UnsupportedMediaType", "send Content-Type: application/json")
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "BadJson", "the body is not valid JSON") from None


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _logged(ctx: Ctx, rec: DecisionRecorded, wid: str) -> None:
    log.info("%s %s in %s by %s (%s)", rec.decision, rec.id, wid, rec.decided_by, ctx.user.method)


def _csrf_ok(ctx: Ctx, token: str | None) -> bool:
    return ctx.session.check_csrf(token)


RATE_LIMITED = "RateLimited"


def _slow_down(wait: float) -> str:
    return (
        f"You sent too many decisions or link requests in a short time; nothing was sent to "
        f"the conversation. Try again in {retry_after(wait)} s."
    )


def _too_many(request: Request, ctx: Ctx, wait: float) -> Response:
    response = render(
        request,
        ctx,
        "error.html",
        http_status=429,
        title="Too many requests",
        message=_slow_down(wait),
    )
    response.headers["Retry-After"] = retry_after(wait)
    return response


def _api_too_many(wait: float) -> Response:
    return JSONResponse(
        _error(RATE_LIMITED, _slow_down(wait), retry_after_seconds=int(retry_after(wait))),
        status_code=429,
        headers={"Retry-After": retry_after(wait)},
    )


def _shown_link(link: AuthLink) -> AuthLink:
    """``link`` as a page shows it or the API returns it: a URL that is not plain http(s)
    (``javascript:``, ``data:``…) is dropped and the link is ``unavailable``."""
    if link.url is not None and safe_url(link.url) is None:
        return link.model_copy(update={"url": None, "status": "unavailable"})
    return link


def _link_refusal(me: Identity, ref: str, item: Item | None) -> Explanation | None:
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


# -------------------------------------------------------------------- pages


async def home(request: Request) -> Response:
    return RedirectResponse("/pending", status_code=303)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _filters(request: Request) -> tuple[str | None, str | None]:
    g = (request.query_params.get("genie") or "").strip()[:MAX_FILTER_CHARS] or None
    s = (request.query_params.get("skill") or "").strip()[:MAX_FILTER_CHARS] or None
    return g, s


def _temporal_down(request: Request, ctx: Ctx, e: Unavailable) -> Response:
    return render(
        request,
        ctx,
        "error.html",
        http_status=503,
        title="Temporal is not answering",
        message=f"The pending list could not be read: {e}. This page will work again once "
        "Temporal answers.",
    )


async def pending_page(request: Request, ctx: Ctx) -> Response:
    genie, skill = _filters(request)
    try:
        listing = await ctx.inbox.reader.pending(ctx.user, genie=genie, skill=skill)
    except Unavailable as e:
        return _temporal_down(request, ctx, e)
    query = urlencode({k: v for k, v in (("genie", genie), ("skill", skill)) if v})
    return render(
        request,
        ctx,
        "pending.html",
        listing=listing,
        genie=genie,
        skill=skill,
        fragment_url="/pending/fragment" + (f"?{query}" if query else ""),
    )


async def pending_fragment(request: Request, ctx: Ctx) -> Response:
    genie, skill = _filters(request)
    try:
        listing = await ctx.inbox.reader.pending(
            ctx.user, genie=genie, skill=skill, max_age=LISTING_CACHE_SECONDS
        )
    except Unavailable:
        return HTMLResponse("", status_code=503)
    return render(request, ctx, "_items.html", listing=listing, genie=genie, skill=skill)


async def _posted_form(request: Request, ctx: Ctx) -> tuple[str, str, FormData] | Response:
    """An item page's POST: its ids, and its form once the ids, the body and the CSRF
    token hold; else the page that says what was wrong."""
    wid, ref = _ids(request)
    if not (_valid_id(wid) and _valid_id(ref)):
        return _not_found(request, ctx)
    try:
        form = await _form(request)
    except BadRequest as e:
        return _bad_request(request, ctx, e)
    if not _csrf_ok(ctx, _field(form, CSRF_FIELD)):
        return _csrf_refused(request, ctx)
    return wid, ref, form


def _ids(request: Request) -> tuple[str, str]:
    wid = str(request.path_params["wid"])
    ref = str(request.path_params["ref"])
    return wid, ref


async def _item_state(
    ctx: Ctx, wid: str, kind: Kind, ref: str
) -> tuple[ConversationStatus, Item | None]:
    st, items = await ctx.inbox.reader.items(wid, ctx.user)
    item = next((i for i in items if i.kind == kind and i.ref == ref), None)
    return st, item


def _problem_page(request: Request, ctx: Ctx, e: Exception, wid: str) -> Response:
    if isinstance(e, NotFound):
        return render(
            request,
            ctx,
            "error.html",
            http_status=404,
            title="No such conversation",
            message=f"No conversation has the workflow id {wid}.",
        )
    return render(
        request,
        ctx,
        "error.html",
        http_status=503,
        title="The conversation is not answering",
        message=f"The conversation {wid} could not be read: {e}.",
    )


def item_page(kind: Kind) -> Handler:
    async def show(request: Request, ctx: Ctx) -> Response:
        wid, ref = _ids(request)
        if not (_valid_id(wid) and _valid_id(ref)):
            return _not_found(request, ctx)
        try:
            st, item = await _item_state(ctx, wid, kind, ref)
        except (NotFound, Unavailable) as e:
            return _problem_page(request, ctx, e, wid)
        return render(
            request,
            ctx,
            "item.html",
            kind=kind,
            wid=wid,
            ref=ref,
            item=item,
            decided=who_decided(st, ref),
            form_error=None,
            link=None,
        )

    return show


def _verdict(kind: Kind, choice: str | None) -> Verdict | None:
    table: dict[tuple[str, str | None], Verdict] = {
        ("skill", "approve"): "approved",
        ("skill", "reject"): "rejected",
        ("connection", "done"): "done",
        ("connection", "reject"): "reject",
    }
    return table.get((kind, choice))


async def _explained(ctx: Ctx, e: Refused, wid: str, ref: str) -> Explanation:
    st: ConversationStatus | None = None
    with contextlib.suppress(NotFound, Unavailable):
        st = await ctx.inbox.reader.status(wid)
    return explain(e.type, e.message, me=ctx.user, ref=ref, status=st)


def decide_page(kind: Kind) -> Handler:
    async def post(request: Request, ctx: Ctx) -> Response:
        posted = await _posted_form(request, ctx)
        if isinstance(posted, Response):
            return posted
        wid, ref, form = posted
        verdict = _verdict(kind, _field(form, "verdict"))
        reason = (_field(form, "reason") or "").strip() or None
        problem = None
        if verdict is None:
            problem = "Choose one of the buttons."
        elif verdict in ("rejected", "reject") and kind == "skill" and reason is None:
            problem = "A rejection needs a reason: the genie tells the user why."
        elif reason is not None and len(reason) > MAX_REASON_CHARS:
            problem = f"The reason is longer than {MAX_REASON_CHARS} characters."
        if problem is not None or verdict is None:
            try:
                st, item = await _item_state(ctx, wid, kind, ref)
            except (NotFound, Unavailable) as e:
                return _problem_page(request, ctx, e, wid)
            return render(
                request,
                ctx,
                "item.html",
                http_status=422,
                kind=kind,
                wid=wid,
                ref=ref,
                item=item,
                decided=who_decided(st, ref),
                form_error=problem,
                link=None,
            )
        wait = ctx.inbox.limited(ctx.user)
        if wait:
            return _too_many(request, ctx, wait)
        try:
            rec = await ctx.inbox.decide(ctx.user, wid, kind, ref, verdict, reason)
        except Refused as e:
            ex = await _explained(ctx, e, wid, ref)
            return render(
                request,
                ctx,
                "outcome.html",
                http_status=ex.http_status,
                ok=False,
                explanation=ex,
                wid=wid,
                kind=kind,
                ref=ref,
                record=None,
            )
        except (NotFound, Unavailable) as e:
            return _problem_page(request, ctx, e, wid)
        _logged(ctx, rec, wid)
        after = None  # a first of several approvals leaves the item pending
        with contextlib.suppress(NotFound, Unavailable):
            after = (await _item_state(ctx, wid, kind, ref))[1]
        return render(
            request,
            ctx,
            "outcome.html",
            ok=True,
            explanation=None,
            wid=wid,
            kind=kind,
            ref=ref,
            record=rec,
            after=after,
        )

    return post


async def refresh_link_page(request: Request, ctx: Ctx) -> Response:
    posted = await _posted_form(request, ctx)
    if isinstance(posted, Response):
        return posted
    wid, ref, _form_data = posted
    try:
        st, item = await _item_state(ctx, wid, "connection", ref)
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    refusal = _link_refusal(ctx.user, ref, item)
    if refusal is not None:  # read only: nothing is sent to the conversation
        return render(
            request,
            ctx,
            "item.html",
            http_status=refusal.http_status,
            kind="connection",
            wid=wid,
            ref=ref,
            item=item,
            decided=who_decided(st, ref),
            form_error=refusal.sentence,
            link=None,
        )
    wait = ctx.inbox.limited(ctx.user)
    if wait:
        return _too_many(request, ctx, wait)
    link_error = None
    link = None
    try:
        link = _shown_link(await ctx.inbox.auth_link(wid, ref))
    except Refused as e:
        link_error = explain(e.type, e.message, me=ctx.user, ref=ref).sentence
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    try:
        st, item = await _item_state(ctx, wid, "connection", ref)
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    if item is not None and not item.can_decide:
        link = None  # decided meanwhile (or by someone else): the link is not shown
    return render(
        request,
        ctx,
        "item.html",
        kind="connection",
        wid=wid,
        ref=ref,
        item=item,
        decided=who_decided(st, ref),
        form_error=link_error,
        link=link,
    )


def _not_found(request: Request, ctx: Ctx) -> Response:
    return render(
        request, ctx, "error.html", http_status=404, title="Not found", message="No such item."
    )


def _bad_request(request: Request, ctx: Ctx, e: BadRequest) -> Response:
    return render(
        request, ctx, "error.html", http_status=e.status, title="Bad request", message=e.message
    )


def _csrf_refused(request: Request, ctx: Ctx) -> Response:
    return render(
        request,
        ctx,
        "error.html",
        http_status=403,
        title="Form expired",
        message="This form is not from your current session (or it is too old), so nothing "
        "was decided. Go back, reload the page and try again.",
    )


async def conversation_page(request: Request, ctx: Ctx) -> Response:
    wid = str(request.path_params["wid"])
    if not _valid_id(wid):
        return render(request, ctx, "error.html", http_status=404, title="Not found", message="")
    try:
        st, items = await ctx.inbox.reader.items(wid, ctx.user)
        tr: Transcript | None = await ctx.inbox.reader.transcript(wid)
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    return render(request, ctx, "conversation.html", wid=wid, status=st, items=items, transcript=tr)


async def login_get(request: Request, ctx: Ctx) -> Response:
    if ctx.inbox.config.auth == "proxy":
        return render(
            request,
            ctx,
            "error.html",
            http_status=404,
            title="No login here",
            message="Your proxy signs you in; there is nothing to log into.",
        )
    return login_page(request, ctx, _safe_next(request.query_params.get("next")), None)


async def login_post(request: Request, ctx: Ctx) -> Response:
    inbox = ctx.inbox
    if inbox.config.auth == "proxy":
        return await login_get(request, ctx)
    try:
        form = await _form(request)
    except BadRequest as e:
        return login_page(request, ctx, "/pending", e.message, http_status=e.status)
    target = _safe_next(_field(form, "next"))
    if not _csrf_ok(ctx, _field(form, CSRF_FIELD)):
        return login_page(request, ctx, target, "the form expired: try again", http_status=403)
    if inbox.config.auth == "jwt":
        token = (_field(form, "token") or "").strip()
        try:
            await inbox.auth.verify_token(token)
        except Unauthenticated as e:
            return login_page(request, ctx, target, str(e), http_status=401)
        ctx.session.login(jwt=token)
    else:
        name = clean_name(_field(form, "name"))
        if name is None:
            return login_page(
                request,
                ctx,
                target,
                f"pick a name (1 to {MAX_ID_CHARS} printable characters)",
                http_status=422,
            )
        ctx.session.login(dev_name=name)
    if inbox.codec.dump(ctx.session) is None:
        return login_page(request, ctx, target, "the token is too long", http_status=422)
    return RedirectResponse(target, status_code=303)


async def logout(request: Request, ctx: Ctx) -> Response:
    with contextlib.suppress(BadRequest):
        form = await _form(request)
        if _csrf_ok(ctx, _field(form, CSRF_FIELD)):
            ctx.session.logout()
    return RedirectResponse("/login", status_code=303)


# -------------------------------------------------------------------- JSON API


def _identity_json(me: Identity) -> dict[str, Any]:
    return {"name": me.name, "groups": list(me.groups), "auth_method": me.method}


async def api_session(request: Request, ctx: Ctx) -> Response:
    """Who you are, and the CSRF token a cookie-authenticated script sends back."""
    return JSONResponse({"me": _identity_json(ctx.user), "csrf_token": ctx.session.csrf})


async def api_pending(request: Request, ctx: Ctx) -> Response:
    genie, skill = _filters(request)
    try:
        listing = await ctx.inbox.reader.pending(ctx.user, genie=genie, skill=skill)
    except Unavailable as e:
        return _api_problem(e)
    return JSONResponse(
        {
            "me": _identity_json(ctx.user),
            "items": [i.model_dump(mode="json") for i in listing.items],
            "not_answering": [s.model_dump(mode="json") for s in listing.silent],
            "not_listed": listing.not_listed,
        }
    )


def _api_ids(request: Request) -> tuple[str, str]:
    wid, ref = _ids(request)
    if not (_valid_id(wid) and _valid_id(ref)):
        raise BadRequest(404, "NotFound", "no such item")
    return wid, ref


def _api_problem(e: Exception) -> Response:
    if isinstance(e, NotFound):
        return JSONResponse(_error("NotFound", str(e)), status_code=404)
    return JSONResponse(_error("Unavailable", str(e)), status_code=503)


async def api_conversation(request: Request, ctx: Ctx) -> Response:
    wid = str(request.path_params["wid"])
    if not _valid_id(wid):
        raise BadRequest(404, "NotFound", "no such conversation")
    try:
        st, items = await ctx.inbox.reader.items(wid, ctx.user)
        tr = await ctx.inbox.reader.transcript(wid)
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    return JSONResponse(
        {
            "workflow_id": wid,
            "status": st.model_dump(mode="json"),
            "transcript": tr.model_dump(mode="json"),
            "items": [i.model_dump(mode="json") for i in items],
        }
    )


def _api_csrf(request: Request, ctx: Ctx) -> None:
    """Cookie- or proxy-authenticated calls are ambient: they need the CSRF header."""
    if ctx.user.ambient and not _csrf_ok(ctx, request.headers.get(CSRF_HEADER)):
        raise BadRequest(
            403,
            "CsrfRequired",
            f"send {CSRF_HEADER} (from GET /api/session) or authenticate with a bearer token",
        )


def _body(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        parts = [f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()]
        raise BadRequest(422, "InvalidInput", "; ".join(parts[:10])) from None


async def _api_decide(
    request: Request, ctx: Ctx, kind: Kind, verdict: Verdict, reason: str | None
) -> Response:
    wid, ref = _api_ids(request)
    wait = ctx.inbox.limited(ctx.user)
    if wait:
        return _api_too_many(wait)
    try:
        rec: DecisionRecorded = await ctx.inbox.decide(ctx.user, wid, kind, ref, verdict, reason)
    except Refused as e:
        ex = await _explained(ctx, e, wid, ref)
        return JSONResponse(
            _error(ex.type, ex.sentence, title=ex.title, detail=ex.detail),
            status_code=ex.http_status,
        )
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    _logged(ctx, rec, wid)
    return JSONResponse({"decision": rec.model_dump(mode="json")})


async def api_decide_skill(request: Request, ctx: Ctx) -> Response:
    _api_ids(request)
    _api_csrf(request, ctx)
    body: SkillDecisionBody = _body(SkillDecisionBody, await _json(request))
    reason = (body.reason or "").strip() or None
    if not body.approved and reason is None:
        raise BadRequest(422, "InvalidInput", "reason: a rejection needs a reason")
    return await _api_decide(
        request, ctx, "skill", "approved" if body.approved else "rejected", reason
    )


async def api_decide_connection(request: Request, ctx: Ctx) -> Response:
    _api_ids(request)
    _api_csrf(request, ctx)
    body: ConnectionDecisionBody = _body(ConnectionDecisionBody, await _json(request))
    reason = (body.reason or "").strip() or None
    return await _api_decide(request, ctx, "connection", body.action, reason)


async def api_auth_link(request: Request, ctx: Ctx) -> Response:
    wid, ref = _api_ids(request)
    _api_csrf(request, ctx)
    try:
        _st, item = await _item_state(ctx, wid, "connection", ref)
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    refusal = _link_refusal(ctx.user, ref, item)
    if refusal is not None:  # read only: nothing is sent to the conversation
        return JSONResponse(
            _error(refusal.type, refusal.sentence, title=refusal.title, detail=refusal.detail),
            status_code=refusal.http_status,
        )
    wait = ctx.inbox.limited(ctx.user)
    if wait:
        return _api_too_many(wait)
    try:
        link = _shown_link(await ctx.inbox.auth_link(wid, ref))
    except Refused as e:
        ex = explain(e.type, e.message, me=ctx.user, ref=ref)
        return JSONResponse(_error(ex.type, ex.sentence, detail=ex.detail), ex.http_status)
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    return JSONResponse({"link": link.model_dump(mode="json")})


# -------------------------------------------------------------------- assembly


def create_app(
    config: InboxConfig, *, client: Client | None = None, task_queue: str | None = None
) -> Starlette:
    """The app; it connects to Temporal (``TEMPORAL_*``) at startup unless given a client."""
    from genie_config import load_settings

    queue = task_queue or load_settings().task_queue

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        c = client or await connect_temporal()
        api = GenieConversations(c, task_queue=queue)
        s = config.settings
        app.state.inbox = Inbox(
            config=config,
            reader=Reader(api, query_timeout=s.query_timeout_seconds, max_listed=s.max_listed),
            decider=Decider(
                api, config.signing_key, config.signing_key_id, s.decision_timeout_seconds
            ),
            auth=Authenticator(config),
            codec=SessionCodec(config.session_secret, s.session_max_age_seconds),
            templates=_templates(),
            limiter=RateLimiter(s.rate_limit_burst, s.rate_limit_per_second),
        )
        yield

    skill: Kind = "skill"
    connection: Kind = "connection"
    # ``path``: a workflow id may hold "/" (Temporal takes any string; links encode it as
    # %2F, which the server decodes before routing). The parts after it are fixed words
    # and an API id without "/", so the match is still unambiguous.
    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/pending", page(pending_page)),
        Route("/pending/fragment", page(pending_fragment)),
        Route("/items/{wid:path}/skill/{ref}", page(item_page(skill))),
        Route("/items/{wid:path}/skill/{ref}", page(decide_page(skill)), methods=["POST"]),
        Route("/items/{wid:path}/connection/{ref}", page(item_page(connection))),
        Route(
            "/items/{wid:path}/connection/{ref}", page(decide_page(connection)), methods=["POST"]
        ),
        Route("/items/{wid:path}/connection/{ref}/link", page(refresh_link_page), methods=["POST"]),
        Route("/conversations/{wid:path}", page(conversation_page)),
        Route("/login", page(login_get, login=False)),
        Route("/login", page(login_post, login=False), methods=["POST"]),
        Route("/logout", page(logout, login=False), methods=["POST"]),
        Route("/api/session", api(api_session)),
        Route("/api/pending", api(api_pending)),
        Route("/api/conversations/{wid:path}", api(api_conversation)),
        Route("/api/decisions/{wid:path}/skill/{ref}", api(api_decide_skill), methods=["POST"]),
        Route(
            "/api/decisions/{wid:path}/connection/{ref}",
            api(api_decide_connection),
            methods=["POST"],
        ),
        Route("/api/auth-links/{wid:path}/{ref}", api(api_auth_link), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, max_body_size=config.settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app
