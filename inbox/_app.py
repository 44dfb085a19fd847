"""The inbox as a Starlette app: pages, a JSON API mirroring them, and ``/healthz``.

Every route that shows something only reads (visibility and queries: nothing is added to
any workflow's history); only POSTs decide, each as the authenticated approver, signed
when a key is configured. A POST carried by the browser's cookie alone (a page form, or a
script in the page) must also carry the session's CSRF token; a request that brings its
own bearer token needs none.

This module assembles the app and its route table (``create_app``). The page handlers are
in ``inbox._pages``, the JSON API's in ``inbox._api``, and what both share (the request
wrappers, sessions and CSRF, rendering, the security headers) in ``inbox._web``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from temporalio.client import Client

from genie_config import connect_temporal
from geniectl import GenieConversations
from inbox._api import (
    api_auth_link,
    api_conversation,
    api_decide_connection,
    api_decide_skill,
    api_pending,
    api_session,
)
from inbox._auth import Authenticator
from inbox._data import Reader
from inbox._decide import Decider, Kind
from inbox._limit import RateLimiter
from inbox._pages import (
    conversation_page,
    decide_page,
    healthz,
    home,
    item_page,
    login_get,
    login_post,
    logout,
    pending_fragment,
    pending_page,
    refresh_link_page,
)
from inbox._session import SessionCodec
from inbox._settings import InboxConfig
from inbox._web import HERE, Inbox, SecurityHeaders, api, page, templates

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
            templates=templates(),
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
