"""The inbox's HTML pages: the pending list and the fragment that refreshes it, an item's
page with its decision and auth-link forms, a conversation, login and logout, and the
plain ``/`` and ``/healthz``. Every handler but those two runs inside ``inbox._web.page``,
which loads the session and (except for login and logout) requires an identity; a form
POST checks the session's CSRF token before anything is sent. The form readers and error
pages only pages use are here too; the JSON API mirroring these pages is ``inbox._api``.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from geniectl import NotFound, Refused
from inbox._auth import Unauthenticated, clean_name
from inbox._data import LISTING_CACHE_SECONDS, Item, Unavailable
from inbox._decide import Kind, Verdict
from inbox._explain import explain, who_decided
from inbox._limit import retry_after
from inbox._session import CSRF_FIELD
from inbox._web import (
    BadRequest,
    Ctx,
    Handler,
    csrf_ok,
    explained,
    filters,
    ids,
    item_state,
    link_refusal,
    logged,
    login_page,
    render,
    shown_link,
    slow_down,
    valid_id,
)
from workflows import ConversationStatus, Transcript
from workflows.models import MAX_ID_CHARS, MAX_REASON_CHARS, AuthLink

MAX_FORM_FIELDS = 10


# -------------------------------------------------------------------- reading a form


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no open redirect through the login page)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/pending"
    return value[:2000]


async def _form(request: Request) -> FormData:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise BadRequest(415, "UnsupportedMediaType", "send a form")
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


# -------------------------------------------------------------------- pages


async def home(request: Request) -> Response:
    return RedirectResponse("/pending", status_code=303)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


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
    genie, skill = filters(request)
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
    genie, skill = filters(request)
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
    wid, ref = ids(request)
    if not (valid_id(wid) and valid_id(ref)):
        return _not_found(request, ctx)
    try:
        form = await _form(request)
    except BadRequest as e:
        return _bad_request(request, ctx, e)
    if not csrf_ok(ctx, _field(form, CSRF_FIELD)):
        return _csrf_refused(request, ctx)
    return wid, ref, form


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
        wid, ref = ids(request)
        if not (valid_id(wid) and valid_id(ref)):
            return _not_found(request, ctx)
        try:
            st, item = await item_state(ctx, wid, kind, ref)
        except (NotFound, Unavailable) as e:
            return _problem_page(request, ctx, e, wid)
        return _item_html(request, ctx, kind, wid, ref, st, item)

    return show


def _item_html(
    request: Request,
    ctx: Ctx,
    kind: Kind,
    wid: str,
    ref: str,
    st: ConversationStatus,
    item: Item | None,
    *,
    http_status: int = 200,
    form_error: str | None = None,
    link: AuthLink | None = None,
) -> Response:
    """The item's page, as ``item_state`` read it (``item`` None: decided or gone), with
    what went wrong with the form or the auth link just fetched."""
    return render(
        request,
        ctx,
        "item.html",
        http_status=http_status,
        kind=kind,
        wid=wid,
        ref=ref,
        item=item,
        decided=who_decided(st, ref),
        form_error=form_error,
        link=link,
    )


def _verdict(kind: Kind, choice: str | None) -> Verdict | None:
    table: dict[tuple[str, str | None], Verdict] = {
        ("skill", "approve"): "approved",
        ("skill", "reject"): "rejected",
        ("connection", "done"): "done",
        ("connection", "reject"): "reject",
    }
    return table.get((kind, choice))


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
                st, item = await item_state(ctx, wid, kind, ref)
            except (NotFound, Unavailable) as e:
                return _problem_page(request, ctx, e, wid)
            return _item_html(
                request, ctx, kind, wid, ref, st, item, http_status=422, form_error=problem
            )
        wait = ctx.inbox.limited(ctx.user)
        if wait:
            return _too_many(request, ctx, wait)
        try:
            rec = await ctx.inbox.decide(ctx.user, wid, kind, ref, verdict, reason)
        except Refused as e:
            ex = await explained(ctx, e, wid, ref)
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
        logged(ctx, rec, wid)
        after = None  # a first of several approvals leaves the item pending
        with contextlib.suppress(NotFound, Unavailable):
            after = (await item_state(ctx, wid, kind, ref))[1]
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
        st, item = await item_state(ctx, wid, "connection", ref)
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    refusal = link_refusal(ctx.user, ref, item)
    if refusal is not None:  # read only: nothing is sent to the conversation
        return _item_html(
            request,
            ctx,
            "connection",
            wid,
            ref,
            st,
            item,
            http_status=refusal.http_status,
            form_error=refusal.sentence,
        )
    wait = ctx.inbox.limited(ctx.user)
    if wait:
        return _too_many(request, ctx, wait)
    link_error = None
    link = None
    try:
        link = shown_link(await ctx.inbox.auth_link(wid, ref))
    except Refused as e:
        link_error = explain(e.type, e.message, me=ctx.user, ref=ref).sentence
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    try:
        st, item = await item_state(ctx, wid, "connection", ref)
    except (NotFound, Unavailable) as e:
        return _problem_page(request, ctx, e, wid)
    if item is not None and not item.can_decide:
        link = None  # decided meanwhile (or by someone else): the link is not shown
    return _item_html(
        request, ctx, "connection", wid, ref, st, item, form_error=link_error, link=link
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


def _too_many(request: Request, ctx: Ctx, wait: float) -> Response:
    response = render(
        request,
        ctx,
        "error.html",
        http_status=429,
        title="Too many requests",
        message=slow_down(wait),
    )
    response.headers["Retry-After"] = retry_after(wait)
    return response


async def conversation_page(request: Request, ctx: Ctx) -> Response:
    wid = str(request.path_params["wid"])
    if not valid_id(wid):
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
    if not csrf_ok(ctx, _field(form, CSRF_FIELD)):
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
        if csrf_ok(ctx, _field(form, CSRF_FIELD)):
            ctx.session.logout()
    return RedirectResponse("/login", status_code=303)
