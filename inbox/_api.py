"""The inbox's JSON API, mirroring the pages: who you are, the pending list, a
conversation, skill and connection decisions and fresh auth links, plus the request-body
models the decision POSTs validate (only the API reads JSON bodies). Every handler runs
inside ``inbox._web.api``, which requires an identity and answers a ``BadRequest`` as a
JSON error; a POST authenticated by the cookie or the proxy alone must also send the CSRF
header, one that brings its own bearer token need not.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from geniectl import NotFound, Refused
from inbox._auth import Identity
from inbox._data import Unavailable
from inbox._decide import Kind, Verdict
from inbox._explain import explain
from inbox._limit import retry_after
from inbox._session import CSRF_HEADER
from inbox._web import (
    BadRequest,
    Ctx,
    api_error,
    csrf_ok,
    explained,
    filters,
    ids,
    item_state,
    link_refusal,
    logged,
    shown_link,
    slow_down,
    valid_id,
)
from workflows.models import MAX_REASON_CHARS, DecisionRecorded

# -------------------------------------------------------------------- request bodies


class SkillDecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: StrictBool
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


class ConnectionDecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["done", "reject"]
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


async def _json(request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(415, "UnsupportedMediaType", "send Content-Type: application/json")
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested past the parser's limit
        raise BadRequest(400, "BadJson", "the body is not valid JSON") from None


def _body(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        parts = [f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()]
        raise BadRequest(422, "InvalidInput", "; ".join(parts[:10])) from None


# -------------------------------------------------------------------- JSON API


def _identity_json(me: Identity) -> dict[str, Any]:
    return {"name": me.name, "groups": list(me.groups), "auth_method": me.method}


async def api_session(request: Request, ctx: Ctx) -> Response:
    """Who you are, and the CSRF token a cookie-authenticated script sends back."""
    return JSONResponse({"me": _identity_json(ctx.user), "csrf_token": ctx.session.csrf})


async def api_pending(request: Request, ctx: Ctx) -> Response:
    genie, skill = filters(request)
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
    wid, ref = ids(request)
    if not (valid_id(wid) and valid_id(ref)):
        raise BadRequest(404, "NotFound", "no such item")
    return wid, ref


def _api_problem(e: Exception) -> Response:
    if isinstance(e, NotFound):
        return JSONResponse(api_error("NotFound", str(e)), status_code=404)
    return JSONResponse(api_error("Unavailable", str(e)), status_code=503)


async def api_conversation(request: Request, ctx: Ctx) -> Response:
    wid = str(request.path_params["wid"])
    if not valid_id(wid):
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
    if ctx.user.ambient and not csrf_ok(ctx, request.headers.get(CSRF_HEADER)):
        raise BadRequest(
            403,
            "CsrfRequired",
            f"send {CSRF_HEADER} (from GET /api/session) or authenticate with a bearer token",
        )


RATE_LIMITED = "RateLimited"


def _api_too_many(wait: float) -> Response:
    return JSONResponse(
        api_error(RATE_LIMITED, slow_down(wait), retry_after_seconds=int(retry_after(wait))),
        status_code=429,
        headers={"Retry-After": retry_after(wait)},
    )


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
        ex = await explained(ctx, e, wid, ref)
        return JSONResponse(
            api_error(ex.type, ex.sentence, title=ex.title, detail=ex.detail),
            status_code=ex.http_status,
        )
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    logged(ctx, rec, wid)
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
        _st, item = await item_state(ctx, wid, "connection", ref)
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    refusal = link_refusal(ctx.user, ref, item)
    if refusal is not None:  # read only: nothing is sent to the conversation
        return JSONResponse(
            api_error(refusal.type, refusal.sentence, title=refusal.title, detail=refusal.detail),
            status_code=refusal.http_status,
        )
    wait = ctx.inbox.limited(ctx.user)
    if wait:
        return _api_too_many(wait)
    try:
        link = shown_link(await ctx.inbox.auth_link(wid, ref))
    except Refused as e:
        ex = explain(e.type, e.message, me=ctx.user, ref=ref)
        return JSONResponse(api_error(ex.type, ex.sentence, detail=ex.detail), ex.http_status)
    except (NotFound, Unavailable) as e:
        return _api_problem(e)
    return JSONResponse({"link": link.model_dump(mode="json")})
