"""The inbox's pages and JSON API over HTTP (development identity), on the real stack.

What an approver does: log in, see what waits with its context, decide, see the outcome
or the refusal in words. Reading adds nothing to any workflow's history; only a POST with
the session's CSRF token decides.
"""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from urllib.parse import quote

import httpx
from temporalio.client import Client

from activities._notify import ITEM_PATH
from tests.inbox.conftest import ClientFor
from tests.inbox.helpers import (
    csrf_of,
    dev_login,
    history_length,
    paused_connection,
    paused_skill,
    undecided,
)
from tests.workflow.helpers import convs, eventually
from workflows import ConversationPolicy, errors
from workflows.models import SkillRule

BANNER = "Development mode, not authenticated"


async def test_pending_shows_context_reads_write_no_history_and_one_click_approves(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api, "steps:2 please <b>mail</b> Bob confirm:send_email")
    csrf = await dev_login(dev_http, "alice")
    before = await history_length(api, wid)

    page = await dev_http.get("/pending")
    assert page.status_code == 200 and BANNER in page.text
    text = page.text
    # The tab's title counts what alice may decide.
    assert re.search(r"<title>\(\d+\) Pending · Genie approvals</title>", text), text[:300]
    assert wid in text and "send_email" in text and "gin-test-genie" in text
    # The user's message and the genie's messages of the turn, escaped.
    assert "please &lt;b&gt;mail&lt;/b&gt; Bob" in text and "<b>mail</b>" not in text
    assert "step 1 of 2" in text and "step 2 of 2" in text
    # Parameters pretty-printed (JSON with indentation), deadline and waiting since.
    assert "  &#34;query&#34;: &#34;steps:2 please &lt;b&gt;mail&lt;/b&gt; Bob" in text
    assert "deadline " + item.deadline.strftime("%Y-%m-%d %H:%M:%S") in text
    assert "left</span>" in text and 'data-refresh="/pending/fragment"' in text

    # Every read route, pages and API: not one event added to the workflow's history.
    fragment = await dev_http.get("/pending/fragment")
    assert fragment.status_code == 200 and wid in fragment.text and "<html" not in fragment.text
    assert (await dev_http.get(f"/items/{wid}/skill/{item.call_id}")).status_code == 200
    assert (await dev_http.get(f"/conversations/{wid}")).status_code == 200
    listed = (await dev_http.get("/api/pending")).json()
    mine = [i for i in listed["items"] if i["workflow_id"] == wid]
    assert [(i["ref"], i["title"], i["can_decide"]) for i in mine] == [
        (item.call_id, "send_email", True)
    ]
    assert mine[0]["user_message"].startswith("steps:2 please <b>mail</b>")
    assert mine[0]["genie_messages"] == ["step 1 of 2", "step 2 of 2"]
    conv = (await dev_http.get(f"/api/conversations/{wid}")).json()
    assert conv["status"]["state"] == "awaiting_approval"
    assert await history_length(api, wid) == before

    # GET never decides, whatever it carries.
    r = await dev_http.get(f"/items/{wid}/skill/{item.call_id}?verdict=approve&csrf_token={csrf}")
    assert r.status_code == 200 and undecided(await api.status(wid))

    # The one click on the pending list: the Approve form posts verdict + CSRF.
    r = await dev_http.post(
        f"/items/{wid}/skill/{item.call_id}", data={"csrf_token": csrf, "verdict": "approve"}
    )
    assert r.status_code == 200 and "Approved" in r.text and "by alice" in r.text
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed" and "send_email" in (done.reply or "")
    st = await api.status(wid)
    (entry,) = [a for a in st.audit if a.kind == "skill_decision"]
    assert (entry.actor, entry.decision, entry.via, entry.accepted) == (
        "alice",
        "approved",
        "update",
        True,
    )

    # The conversation page: transcript and the audit trail with its columns.
    conv_page = (await dev_http.get(f"/conversations/{wid}")).text
    assert "Skills run: send_email" in conv_page and "Audit trail" in conv_page
    assert "skill_decision" in conv_page and "decision_applied" in conv_page
    assert "no (name as sent)" in conv_page  # no proof: the name is what was sent


async def test_filters_by_genie_and_skill(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    api = convs(client, task_queue)
    wid_a, _, _ = await paused_skill(api, "confirm:send_email", genie="gin-filter-a")
    wid_b, _, _ = await paused_skill(api, "confirm:wire_money", genie="gin-filter-b")
    await dev_login(dev_http, "alice")

    def ids(payload: dict[str, list[dict[str, str]]]) -> set[str]:
        return {i["workflow_id"] for i in payload["items"]} & {wid_a, wid_b}

    assert ids((await dev_http.get("/api/pending")).json()) == {wid_a, wid_b}
    assert ids((await dev_http.get("/api/pending?genie=gin-filter-a")).json()) == {wid_a}
    assert ids((await dev_http.get("/api/pending?skill=wire_money")).json()) == {wid_b}
    both = "/api/pending?genie=gin-filter-a&skill=wire_money"
    assert ids((await dev_http.get(both)).json()) == set()
    page = await dev_http.get("/pending?genie=gin-filter-b")
    assert wid_b in page.text and wid_a not in page.text
    assert '<option value="gin-filter-b" selected>' in page.text
    assert "/pending/fragment?genie=gin-filter-b" in page.text
    # Sorted by deadline: the earlier pause has the earlier deadline.
    order = [i["workflow_id"] for i in (await dev_http.get("/api/pending")).json()["items"]]
    assert order.index(wid_a) < order.index(wid_b)


async def test_login_is_required_and_every_page_says_dev_mode(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    api = convs(client, task_queue)
    wid, _, item = await paused_skill(api)
    for path in ("/pending", f"/items/{wid}/skill/{item.call_id}", f"/conversations/{wid}"):
        r = await dev_http.get(path)
        assert r.status_code == 401 and "Log in" in r.text and BANNER in r.text, path
        assert f'name="next" value="{html.escape(path)}"' in r.text
    assert (await dev_http.get("/pending/fragment")).status_code == 401
    r = await dev_http.get("/api/pending")
    assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthenticated"
    # The login page returns to where one was going, on this site only.
    page = await dev_http.get("/login")
    csrf = csrf_of(page.text)
    r = await dev_http.post(
        "/login", data={"csrf_token": csrf, "name": "alice", "next": "//evil.example/x"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/pending"
    for path in ("/pending", f"/conversations/{wid}"):
        r = await dev_http.get(path)
        assert r.status_code == 200 and BANNER in r.text and ">alice</span>" in r.text
    assert (await dev_http.get("/healthz")).json() == {"status": "ok"}


async def test_reject_needs_a_reason_which_reaches_the_genie(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api)
    csrf = await dev_login(dev_http, "bob")
    path = f"/items/{wid}/skill/{item.call_id}"
    r = await dev_http.post(path, data={"csrf_token": csrf, "verdict": "reject", "reason": " "})
    assert r.status_code == 422 and "needs a reason" in r.text
    r = await dev_http.post(path, data={"csrf_token": csrf, "verdict": "maybe"})
    assert r.status_code == 422
    assert undecided(await api.status(wid))
    r = await dev_http.post(
        path, data={"csrf_token": csrf, "verdict": "reject", "reason": "wrong <i>team</i>"}
    )
    assert r.status_code == 200 and "Rejected" in r.text
    done = await api.wait(wid, turn, wait_for="completion")
    assert "wrong <i>team</i>" in (done.reply or "")
    # The item page of a decided item says who decided it, and when.
    r = await dev_http.get(path)
    assert "Not waiting any more" in r.text and "rejected by bob at " in r.text


async def test_csrf_is_required_for_every_cookie_authenticated_decision(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api)
    csrf = await dev_login(dev_http, "alice")
    path = f"/items/{wid}/skill/{item.call_id}"
    api_path = f"/api/decisions/{wid}/skill/{item.call_id}"
    for data in ({"verdict": "approve"}, {"verdict": "approve", "csrf_token": "forged"}):
        r = await dev_http.post(path, data=data)
        assert r.status_code == 403 and "nothing was decided" in r.text
    r = await dev_http.post(api_path, json={"approved": True})
    assert r.status_code == 403 and r.json()["error"]["type"] == "CsrfRequired"
    r = await dev_http.post(api_path, json={"approved": True}, headers={"X-CSRF-Token": "x"})
    assert r.status_code == 403
    # Another session's token is not this session's.
    other = client_for("dev")
    other_csrf = await dev_login(other, "mallory")
    r = await dev_http.post(path, data={"verdict": "approve", "csrf_token": other_csrf})
    assert r.status_code == 403
    assert undecided(await api.status(wid))
    # With its own session's token, a script in the page decides.
    r = await dev_http.post(api_path, json={"approved": True}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["decided_by"] == "alice"
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_a_non_approver_sees_it_read_only_is_refused_in_words_and_audited(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api, policy=ConversationPolicy(approvers=["carol"]))
    alice = client_for("dev")
    csrf = await dev_login(alice, "alice")
    page = (await alice.get("/pending")).text
    block = page[page.index(f'data-workflow-id="{wid}"') :]
    block = block[: block.index("</article>")]
    assert "Read-only: only carol may decide in this conversation (you are alice)" in block
    assert "Approve</button>" not in block
    listed = (await alice.get("/api/pending")).json()["items"]
    (mine,) = [i for i in listed if i["workflow_id"] == wid]
    assert mine["can_decide"] is False and "only carol" in mine["why_not"]

    # Posting anyway: the workflow refuses, the page says why, the attempt is audited.
    r = await alice.post(
        f"/items/{wid}/skill/{item.call_id}", data={"csrf_token": csrf, "verdict": "approve"}
    )
    assert r.status_code == 403
    assert "You (alice) are not among those who may decide this." in r.text
    assert "who may: carol" in r.text and "recorded in its audit trail" in r.text
    st = await api.status(wid)
    (entry,) = [a for a in st.audit if a.actor == "alice"]
    assert not entry.accepted and (entry.refusal or "").startswith(errors.APPROVER_NOT_ALLOWED)
    assert undecided(st)
    # The same through the API; the refusal is counted on the same audit entry.
    r = await alice.post(
        f"/api/decisions/{wid}/skill/{item.call_id}",
        json={"approved": True},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 403 and r.json()["error"]["type"] == errors.APPROVER_NOT_ALLOWED
    st = await eventually(
        lambda: api.status(wid),
        lambda s: any(a.actor == "alice" and a.count == 2 for a in s.audit),
        what="the second refusal counted",
    )

    carol = client_for("dev")
    carol_csrf = await dev_login(carol, "carol")
    r = await carol.post(
        f"/items/{wid}/skill/{item.call_id}", data={"csrf_token": carol_csrf, "verdict": "approve"}
    )
    assert r.status_code == 200 and "Approved" in r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_two_deciders_race_one_wins_the_other_hears_who(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    wid, turn, item = await paused_skill(api)
    a, b = client_for("dev"), client_for("dev")
    tokens = [await dev_login(a, "alice"), await dev_login(b, "bob")]
    path = f"/api/decisions/{wid}/skill/{item.call_id}"
    results = await asyncio.gather(
        a.post(path, json={"approved": True}, headers={"X-CSRF-Token": tokens[0]}),
        b.post(path, json={"approved": False, "reason": "no"}, headers={"X-CSRF-Token": tokens[1]}),
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409], [r.text for r in results]
    won = next(r for r in results if r.status_code == 200).json()["decision"]
    lost = next(r for r in results if r.status_code == 409).json()["error"]
    assert lost["type"] == errors.ALREADY_DECIDED and lost["title"] == "Already decided"
    assert f"{won['decision']} by {won['decided_by']} at " in lost["message"]
    # Later, once applied, the page answer is the same sentence from the audit trail.
    await api.wait(wid, turn, wait_for="completion")
    loser = b if won["decided_by"] == "alice" else a
    csrf = tokens[1] if loser is b else tokens[0]
    r = await loser.post(
        f"/items/{wid}/skill/{item.call_id}", data={"csrf_token": csrf, "verdict": "approve"}
    )
    assert r.status_code == 409 and "Someone decided this before you." in r.text
    assert f"{won['decision']} by {won['decided_by']} at " in r.text


async def test_a_connection_shows_its_link_refreshes_it_and_is_marked_done(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    api = convs(client, task_queue)
    wid, turn, conn = await paused_connection(api)
    csrf = await dev_login(dev_http, "alice")
    listed = (await dev_http.get("/api/pending")).json()["items"]
    (mine,) = [i for i in listed if i["workflow_id"] == wid]
    assert (mine["kind"], mine["ref"], mine["title"]) == ("connection", conn.attempt_id, "jira")
    path = f"/items/{wid}/connection/{conn.attempt_id}"
    page = await dev_http.get(path)
    assert conn.auth_url and html.escape(conn.auth_url) in page.text
    assert "Get a fresh link" in page.text

    r = await dev_http.post(f"{path}/link", data={"csrf_token": csrf})
    assert r.status_code == 200
    fresh = (await api.status(wid)).pending_connections[0].auth_url
    assert fresh and html.escape(fresh) in r.text
    r = await dev_http.post(
        f"/api/auth-links/{wid}/{conn.attempt_id}", headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200 and r.json()["link"]["url"].startswith("http")
    link = r.json()["link"]["url"]
    async with httpx.AsyncClient(timeout=10) as user:  # the end user authenticates
        (await user.get(link)).raise_for_status()

    r = await dev_http.post(path, data={"csrf_token": csrf, "verdict": "done"})
    assert r.status_code == 200 and "Marked done" in r.text
    done = await api.wait(wid, turn, wait_for="completion")
    assert done.status == "completed"
    st = await api.status(wid)
    assert [(a.actor, a.decision) for a in st.audit if a.kind == "connection_decision"] == [
        ("alice", "done")
    ]


async def test_a_connection_can_be_rejected_through_the_api(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    api = convs(client, task_queue)
    wid, turn, conn = await paused_connection(api)
    csrf = await dev_login(dev_http, "alice")
    path = f"/api/decisions/{wid}/connection/{conn.attempt_id}"
    r = await dev_http.post(path, json={"action": "maybe"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422
    r = await dev_http.post(
        path, json={"action": "reject", "reason": "not now"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200 and r.json()["decision"]["decision"] == "reject"
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"
    page = (await dev_http.get(f"/conversations/{wid}")).text
    assert "connection_decision" in page and "not now" in page


async def test_a_two_approver_rule_shows_progress_and_takes_a_second_person(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    api = convs(client, task_queue)
    policy = ConversationPolicy(skills=[SkillRule(match="wire_*", required_approvals=2)])
    wid, turn, item = await paused_skill(api, "confirm:wire_money", policy=policy)
    alice, bob = client_for("dev"), client_for("dev")
    tokens = [await dev_login(alice, "alice"), await dev_login(bob, "bob")]
    path = f"/items/{wid}/skill/{item.call_id}"
    r = await alice.post(path, data={"csrf_token": tokens[0], "verdict": "approve"})
    assert r.status_code == 200
    assert "It needs 2 different approvers; so far: alice" in r.text
    page = (await alice.get(path)).text
    assert "approved so far by alice" in page and "Rule <code>wire_*</code>" in page
    assert "Read-only: you approved it already" in page
    r = await alice.post(path, data={"csrf_token": tokens[0], "verdict": "approve"})
    assert r.status_code == 409 and "second approval from someone else" in r.text
    r = await bob.post(path, data={"csrf_token": tokens[1], "verdict": "approve"})
    assert r.status_code == 200 and "Recorded as approved" in r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"


async def test_conversations_past_the_listing_limit_are_counted_not_hidden(
    client: Client, task_queue: str, client_for: ClientFor
) -> None:
    """An inbox reads a bounded number of waiting conversations; when more wait, the
    page and the API say how many it left out, so none waits without anyone knowing."""
    api = convs(client, task_queue)
    await asyncio.gather(paused_skill(api), paused_skill(api))
    http = client_for("dev_one_listed")
    await dev_login(http, "alice")

    body = (await http.get("/api/pending")).json()
    assert (
        len(
            {i["workflow_id"] for i in body["items"]}
            | {s["workflow_id"] for s in body["not_answering"]}
        )
        <= 1
    )
    assert body["not_listed"] >= 1, body

    page = await http.get("/pending")
    assert page.status_code == 200
    assert "more waiting" in page.text
    assert "GENIE_INBOX_MAX_LISTED" in page.text

    # geniectl pending reads the same way, and says the same.
    told: list[int] = []
    items = await api.pending(limit=1, on_not_listed=told.append)
    assert len({i.workflow_id for i in items}) <= 1 and told and told[0] >= 1, told


async def test_a_workflow_id_with_slashes_is_reached_and_decided_through_its_links(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    """Backends name conversations as they like (``tenant/orders/42``); Temporal takes any
    string. Links encode "/" as %2F, which the server decodes before routing, so such a
    conversation's pages were 404 and its notice led nowhere. Every route, from the links
    the pages themselves give."""
    api = convs(client, task_queue)
    wid = f"tenant-{uuid.uuid4().hex[:8]}/orders/a b%c/skill/x"
    wid, turn, item = await paused_skill(api, wid=wid)
    csrf = await dev_login(dev_http, "alice")
    pending = (await dev_http.get("/pending")).text
    path = f"/items/{quote(wid, safe='')}/skill/{item.call_id}"
    assert f'href="{path}"' in pending
    assert ITEM_PATH.format(workflow_id=quote(wid, safe=""), kind="skill", ref=item.call_id) == path
    page = await dev_http.get(path)
    assert page.status_code == 200 and html.escape(wid) in page.text, page.text
    conversation = f"/conversations/{quote(wid, safe='')}"
    assert f'href="{conversation}"' in page.text
    assert (await dev_http.get(conversation)).status_code == 200
    api_conv = await dev_http.get(f"/api/conversations/{quote(wid, safe='')}")
    assert api_conv.status_code == 200 and api_conv.json()["workflow_id"] == wid
    r = await dev_http.post(path, data={"csrf_token": csrf, "verdict": "approve"})
    assert r.status_code == 200 and "Approved" in r.text, r.text
    assert (await api.wait(wid, turn, wait_for="completion")).status == "completed"
    # The JSON API reaches the same conversation: which says the call is decided.
    again = await dev_http.post(
        f"/api/decisions/{quote(wid, safe='')}/skill/{item.call_id}",
        json={"approved": True},
        headers={"X-CSRF-Token": csrf},
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"]["type"] == errors.ALREADY_DECIDED
    # A neighbour whose id is a prefix of this one is not reached by it, nor the reverse.
    other = await dev_http.get(f"/items/{quote(wid.split('/')[0], safe='')}/skill/x")
    assert other.status_code == 404
    assert (await dev_http.get("/conversations/")).status_code == 404


async def test_parameters_too_long_to_keep_whole_are_shown_shortened_and_said_so(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    """A genie drafting a 64 KiB body: the item keeps every parameter's key and the short
    ones whole, cuts the long one where it says so, and tells the approver in words; the
    API and the pending item say it too."""
    api = convs(client, task_queue)
    wid, _turn, item = await paused_skill(api, "mail the draft confirm:send_email params:64")
    assert item.parameters_shortened
    assert item.skill_parameters["query"] == "mail the draft confirm:send_email params:64"
    body = item.skill_parameters["body"]
    assert body.startswith("Lorem ipsum") and body.endswith(" more characters]")
    await dev_login(dev_http, "alice")

    page = await dev_http.get(f"/items/{wid}/skill/{item.call_id}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "too long to keep whole: they are shortened where marked “…”" in text
    assert '"query": "mail the draft confirm:send_email params:64"' in text
    assert " more characters]" in text
    listed = (await dev_http.get("/api/pending")).json()
    (mine,) = [i for i in listed["items"] if i["workflow_id"] == wid]
    assert mine["parameters_shortened"] is True

    plain_wid, _t, plain = await paused_skill(api, "short confirm:send_email")
    assert not plain.parameters_shortened
    page = await dev_http.get(f"/items/{plain_wid}/skill/{plain.call_id}")
    assert "too long to keep whole" not in html.unescape(page.text)


async def test_characters_that_reorder_or_hide_text_are_shown_as_escapes(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    """A genie (or a prompt injected into it) cannot make a page show an approver
    something other than what it sent: a right-to-left override would display
    ``evil@\\u202emoc.elpmaxe`` as an innocent address, a zero-width space hides a
    difference. Pages show each as its escape; the JSON API keeps the data as it is."""
    api = convs(client, task_queue)
    sneaky = "mail evil@\u202emoc.elpmaxe and pay\u200bpal confirm:send_email"
    wid, _turn, item = await paused_skill(api, sneaky)
    assert item.skill_parameters["query"] == sneaky
    await dev_login(dev_http, "alice")
    for path in ("/pending", f"/items/{wid}/skill/{item.call_id}", f"/conversations/{wid}"):
        text = html.unescape((await dev_http.get(path)).text)
        assert "\u202e" not in text and "\u200b" not in text, path
        assert "evil@\\u202emoc.elpmaxe and pay\\u200bpal" in text, path
    listed = (await dev_http.get("/api/pending")).json()
    (mine,) = [i for i in listed["items"] if i["workflow_id"] == wid]
    assert mine["parameters"]["query"] == sneaky


async def test_each_parameter_is_shown_on_its_own_with_its_line_breaks(
    client: Client, task_queue: str, dev_http: httpx.AsyncClient
) -> None:
    """An email body reads as the lines it has, not as one JSON string full of ``\\n``;
    the exact JSON stays on the page, one click away."""
    api = convs(client, task_queue)
    wid, _turn, item = await paused_skill(api, "Hi team,\n\nthe draft. confirm:send_email")
    await dev_login(dev_http, "alice")
    page = (await dev_http.get(f"/items/{wid}/skill/{item.call_id}")).text
    assert "<dt>query</dt>" in page
    assert '<pre class="value text">Hi team,\n\nthe draft. confirm:send_email</pre>' in page
    raw = html.unescape(page.split('<details class="raw">', 1)[1])
    assert '"query": "Hi team,\\n\\nthe draft. confirm:send_email"' in raw
