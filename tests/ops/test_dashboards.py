"""The dashboard and the alert rules in ``deploy/`` name only metrics a worker serves.

The static tests parse every PromQL expression of ``deploy/grafana/genie-worker.json``
and ``deploy/prometheus/alerts.yml`` (``promql-parser``, the Prometheus grammar) and check
the files' structure, since promtool is not installed here. The live test runs a real
worker process on the real stack, makes each series exist — turns, a paused and a
timed-out approval, a failing notification endpoint, an API outage, a conversation stuck
on a payload key the worker lacks — scrapes its ``/metrics``, and checks every metric and
label the files name against what it serves, and the values of the approval gauges.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from genie_codec import PayloadKeys, build_data_converter
from genie_stack import WorkerProcess, worker_env
from geniectl import GenieConversations
from tests.services import REPO_ROOT, SIM_API_KEY, SimProcess, free_port
from tests.webhooks import SECRET
from worker import HISTOGRAM_BUCKETS
from workflows import ConversationPolicy
from workflows.models import ConversationStart
from workflows.search_attributes import GENIE_AWAITING_SINCE, GENIE_DEADLINE, GENIE_STATE

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "genie-worker.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"

GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h"}
"""Grafana's range variables, which are not PromQL until Grafana substitutes them."""
REQUIRED_PANELS = (
    "Turns by status",
    "Turn latency",
    "Pending approvals by age",
    "Oldest pending approval",
    "Notification failures",
    "Stream reconnects and segment retries",
    "Activity retries",
    "Workflow task failures",
    "Sticky cache size",
)
REQUIRED_ALERTS = (
    "GenieWorkflowTaskFailureLoop",
    "GenieApprovalPastDeadline",
    "GenieApiUnreachable",
)
TARGET_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every series it scrapes (the worker does not serve them)."""
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


# ---------------------------------------------------------------- what the files name


@dataclass
class Named:
    """What one expression names: metrics with the labels it matches on, and the labels
    each aggregation groups by with the metrics under it."""

    where: str
    metrics: dict[str, set[str]] = field(default_factory=dict)
    groupings: list[tuple[set[str], set[str]]] = field(default_factory=list)


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr, *([node.param] if node.param is not None else [])]
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.SubqueryExpr):
        return [node.expr]
    return []


def _selectors(node: Any) -> Iterator[promql_parser.VectorSelector]:
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    for child in _children(node):
        yield from _selectors(child)


def _aggregations(node: Any) -> Iterator[promql_parser.AggregateExpr]:
    if isinstance(node, promql_parser.AggregateExpr):
        yield node
    for child in _children(node):
        yield from _aggregations(child)


def parse_promql(expr: str) -> Any:
    for var, value in GRAFANA_RANGES.items():
        expr = expr.replace(f"[{var}]", f"[{value}]")
    return promql_parser.parse(expr)


def named_in(expr: str, where: str) -> Named:
    """Parse ``expr`` (PromQL; a syntax error fails here) and collect what it names."""
    tree = parse_promql(expr)
    named = Named(where)
    for vs in _selectors(tree):
        assert vs.name, f"{where}: select metrics by name, not only by labels: {expr}"
        labels = {m.name for m in vs.matchers.matchers}
        labels |= {m.name for group in vs.matchers.or_matchers for m in group}
        named.metrics.setdefault(vs.name, set()).update(labels)
    for agg in _aggregations(tree):
        if agg.modifier is not None and agg.modifier.type == promql_parser.AggModifierType.By:
            under = {vs.name for vs in _selectors(agg.expr) if vs.name}
            named.groupings.append((set(agg.modifier.labels), under))
    return named


def _dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for p in dashboard["panels"]:
        flat.append(p)
        flat.extend(p.get("panels", []))
    return flat


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def everything_named() -> list[Named]:
    """Every expression of the dashboard (panels and variables) and of the alerts."""
    named: list[Named] = []
    dash = _dashboard()
    for p in _panels(dash):
        for t in p.get("targets", []):
            named.append(named_in(t["expr"], f"panel {p['title']!r} {t['refId']}"))
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = LABEL_VALUES.match(var["query"]["query"])
        assert m and m["selector"], f"variable {var['name']}: label_values(selector, label)"
        n = named_in(m["selector"], f"variable {var['name']}")
        for metric in n.metrics:
            n.metrics[metric].add(m["label"])
        named.append(n)
    for rule in _alert_rules():
        named.append(named_in(rule["expr"], f"alert {rule['alert']}"))
    return named


# ------------------------------------------------------------------------ static tests


def test_dashboard_is_a_grafana_dashboard_with_the_panels_ops_need() -> None:
    dash = _dashboard()
    assert dash["uid"] == "genie-worker" and dash["schemaVersion"] >= 36
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    titles = {p["title"] for p in panels}
    assert not set(REQUIRED_PANELS) - titles, "every panel the issue asks for"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["description"], f"{p['title']}: says what it shows"
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            # Our filters on every query, so the variables narrow the whole dashboard.
            assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])
            assert 'task_queue=~"$task_queue"' in t["expr"], (p["title"], t["expr"])


def test_alert_rules_are_prometheus_rules_for_the_three_failures() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            parse_promql(rule["expr"])
            assert DURATION.match(str(rule.get("for", "0s"))), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    names = [r["alert"] for r in _alert_rules()]
    assert len(names) == len(set(names))
    assert not set(REQUIRED_ALERTS) - set(names)


def test_scrape_config_loads_the_rules_and_scrapes_the_compose_workers() -> None:
    doc = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert [(SCRAPE_CONFIG.parent / f).resolve() for f in doc["rule_files"]] == [ALERTS]
    (job,) = doc["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert f"GENIE_METRICS_PORT:-{sd['port']}" in compose
    assert sd["names"] == ["worker"] and "\n  worker:\n" in compose


def test_the_parser_finds_names_in_every_construct() -> None:
    """The check below is only as good as the walk: selectors under functions, binary
    operators, ``unless``/``offset``, parentheses and subqueries are all found."""
    n = named_in(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="1"}[$__rate_interval])))'
        " / (b or vector(0)) - max_over_time((c unless d offset 5m)[10m:1m]) > -e",
        "probe",
    )
    assert n.metrics == {"a_bucket": {"x"}, "b": set(), "c": set(), "d": set(), "e": set()}
    assert n.groupings == [({"le"}, {"a_bucket"})]
    with pytest.raises(ValueError, match="parenthesis"):
        parse_promql("sum by (le (rate(a[5m]))")


# --------------------------------------------------- the deadline the alert rests on


async def test_the_deadline_search_attribute_is_the_waits_last_moment(
    client: Client, task_queue: str
) -> None:
    """``GenieDeadline`` is when the policy decides at the latest: the approval's deadline
    plus the escalation wait under ``escalate``; unset once nothing waits."""
    api = GenieConversations(client, task_queue=task_queue)
    policy = ConversationPolicy(
        approval_timeout=timedelta(hours=1),
        on_approval_timeout="escalate",
        escalation_timeout=timedelta(hours=2),
    )
    wid = await api.start("gin-ops", "user-d", workflow_id=f"ops-d-{uuid.uuid4()}", policy=policy)
    res = await api.ask(wid, "confirm:send_email")
    assert res.status == "awaiting_approval"
    approval = res.pending.approvals[0]
    attrs = (await client.get_workflow_handle(wid).describe()).typed_search_attributes
    deadline = attrs.get(GENIE_DEADLINE)
    assert deadline is not None
    assert abs(deadline - (approval.deadline + timedelta(hours=2))) < timedelta(seconds=1)

    await api.approve(wid, approval.call_id, approver="ops")
    assert (await api.wait(wid, res.turn, wait_for="completion")).status == "completed"
    attrs = (await client.get_workflow_handle(wid).describe()).typed_search_attributes
    assert attrs.get(GENIE_STATE) == "idle" and attrs.get(GENIE_DEADLINE) is None


# ------------------------------------------------------------------- the live worker


@pytest.fixture
async def metrics_worker(
    temporal_env: WorkflowEnvironment, sim: SimProcess, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """A real worker process with metrics on its own task queue; its notification
    endpoint is a port nothing listens on. Yields (task queue, metrics URL)."""
    tq = f"ops-{uuid.uuid4()}"
    env = worker_env(
        temporal_address=temporal_env.client.service_client.config.target_host,
        api_base_url=sim.base_url,
        api_key=SIM_API_KEY,
        task_queue=tq,
        metrics_port=free_port(),
        settings={"notify_url": f"http://127.0.0.1:{free_port()}/hook", "notify_secret": SECRET},
        inherit=False,
    )
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker.log")
    await worker.start()
    try:
        assert worker.metrics_url is not None
        yield tq, worker.metrics_url
    finally:
        # The background sampler stops with the worker: a clean SIGTERM exit.
        assert await worker.terminate() == 0, worker.log_since_start()


async def _stuck_conversation(client: Client, tq: str, since: datetime) -> WorkflowHandle[Any, Any]:
    """A conversation waiting on an approval since ``since`` that can never run: its
    input is encrypted with a payload key the worker does not have, so every workflow
    task fails — the production failure the past-deadline alert exists for. Its search
    attributes are what a conversation parked since then, due an hour later, holds."""
    foreign = PayloadKeys({"k-not-on-this-worker": os.urandom(32)})
    other = await Client.connect(
        client.service_client.config.target_host,
        namespace=client.namespace,
        data_converter=build_data_converter(foreign),
    )
    return await other.start_workflow(
        "GenieConversation",
        ConversationStart(genie_handle="gin-ops", user_id="user-stuck"),
        id=f"ops-stuck-{uuid.uuid4()}",
        task_queue=tq,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(GENIE_STATE, "awaiting_approval"),
                SearchAttributePair(GENIE_AWAITING_SINCE, since),
                SearchAttributePair(GENIE_DEADLINE, since + timedelta(hours=1)),
            ]
        ),
    )


EVENTS = (
    "genie_api_outage_retries",
    "genie_approval_timeouts",
    "genie_approvals_past_deadline",
    "genie_stream_segment_retries",
    "temporal_workflow_task_execution_failed",
)
"""Series that exist (or leave 0) only once their event happened."""


async def _scrape_until(url: str, done: Callable[[Scrape], bool], tries: int = 120) -> Scrape:
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(tries):
            scrape = Scrape.parse((await http.get(url)).text)
            if done(scrape):
                return scrape
            await asyncio.sleep(1)
    ours = "\n".join(line for line in scrape.text.splitlines() if line.startswith("genie_"))
    raise AssertionError(f"not all series reached their value in {tries} s:\n{ours}")


SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    """One ``/metrics`` answer: each sample name with its label sets."""

    text: str
    samples: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        # Names as written, as Prometheus stores them from this (0.0.4 text) format;
        # prometheus_client's parser would add "_total" to every counter.
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for line in text.splitlines():
            m = SAMPLE.match(line)
            if m is None:
                assert not line.strip() or line.startswith("#"), line
                continue
            labels = {k: v for k, v in LABEL.findall(m["labels"] or "")}
            samples.setdefault(m["name"], []).append((labels, float(m["value"])))
        return cls(text, samples)

    def value(self, name: str, tq: str, **labels: str) -> float:
        return sum(
            v
            for lab, v in self.samples.get(name, [])
            if lab.get("task_queue") == tq and labels.items() <= lab.items()
        )

    def labels_of(self, name: str) -> set[str]:
        return {k for lab, _ in self.samples.get(name, []) for k in lab}


@pytest.mark.timeout(480)  # an outage ridden out (~1.5 min) and a 30 s gauge refresh
async def test_every_metric_the_dashboard_and_alerts_name_is_served(
    temporal_env: WorkflowEnvironment,
    sim: SimProcess,
    metrics_worker: tuple[str, str],
) -> None:
    tq, url = metrics_worker
    client = temporal_env.client
    api = GenieConversations(client, task_queue=tq)
    run = uuid.uuid4().hex[:8]
    stuck: WorkflowHandle[Any, Any] | None = None
    waiting: str | None = None
    try:
        # A plain turn.
        a = await api.start("gin-ops", "user-a", workflow_id=f"ops-a-{run}")
        assert (await api.ask(a, "hello")).status == "completed"
        # The API fails every attempt of the next turn's send (the activity's 7), so the
        # workflow rides it out on a durable timer, then the turn goes through.
        conv = (await api.status(a)).conversation_id
        sim.fault(endpoint="send_message", conversation_id=conv, status=503, times=7)
        after_outage = asyncio.create_task(api.ask(a, "after the outage"))
        # An approval nobody decides in time: the policy rejects it, the turn goes on.
        b = await api.start(
            "gin-ops",
            "user-b",
            workflow_id=f"ops-b-{run}",
            policy=ConversationPolicy(approval_timeout=timedelta(seconds=2)),
        )
        res = await api.ask(b, "confirm:send_email")
        assert res.status == "awaiting_approval"
        assert (await api.wait(b, res.turn, wait_for="completion")).status == "completed"
        # An approval a human decides, then one that waits; both are announced to an
        # endpoint that is down.
        waiting = await api.start("gin-ops", "user-c", workflow_id=f"ops-c-{run}")
        res = await api.ask(waiting, "confirm:send_email")
        await api.approve(waiting, res.pending.approvals[0].call_id, approver="ops")
        assert (await api.wait(waiting, res.turn, wait_for="completion")).status == "completed"
        assert (await api.ask(waiting, "confirm:send_email")).status == "awaiting_approval"
        # And one stuck for two hours, an hour past its deadline.
        stuck = await _stuck_conversation(client, tq, datetime.now(UTC) - timedelta(hours=2))

        assert (await after_outage).status == "completed"

        def complete(scrape: Scrape) -> bool:
            return (
                all(scrape.value(n, tq) >= 1 for n in EVENTS)
                and scrape.value("genie_turn_latency_count", tq, paused="false") >= 2
                and scrape.value("genie_approvals", tq, decision="approved") >= 1
            )

        scrape = await _scrape_until(url, complete)  # gauges refresh every 30 s
    finally:
        if stuck is not None:
            await client.get_workflow_handle(stuck.id).terminate("test over")
        if waiting is not None:
            await api.end(waiting)

    # What the dashboard and the alerts name is served, with the labels they use.
    missing: list[str] = []
    for n in everything_named():
        for metric, labels in n.metrics.items():
            if metric not in scrape.samples:
                missing.append(f"{n.where}: {metric}")
            elif unknown := labels - scrape.labels_of(metric) - TARGET_LABELS:
                missing.append(f"{n.where}: {metric} has no {unknown}")
        for by, under in n.groupings:
            served = TARGET_LABELS.union(*(scrape.labels_of(m) for m in under))
            if by - served:
                missing.append(f"{n.where}: by {by - served} over {under}")
    assert not missing, "\n".join(missing)

    # The approval gauges count this task queue's conversations from visibility.
    pending = {
        age: scrape.value("genie_pending_approvals", tq, age=age)
        for age in ("under_5m", "5m_to_1h", "1h_to_24h", "over_24h")
    }
    assert pending == {"under_5m": 1, "5m_to_1h": 0, "1h_to_24h": 1, "over_24h": 0}
    oldest = scrape.value("genie_oldest_pending_approval_seconds", tq)
    assert 7200 <= oldest < 7200 + 600
    assert scrape.value("genie_approvals_past_deadline", tq) == 1
    # The workflow's counters and the turn latency, by label.
    assert scrape.value("temporal_activity_execution_failed", tq, activity_type="notify") >= 1
    assert scrape.value("genie_turns", tq, status="completed") >= 4
    assert scrape.value("genie_approvals", tq, decision="approved") >= 1
    assert scrape.value("genie_turn_latency_count", tq, paused="true") >= 1
    assert scrape.value("genie_turn_latency_count", tq, paused="false") >= 2
    bounds = {
        float(lab["le"])
        for lab, _ in scrape.samples["genie_turn_latency_bucket"]
        if lab["le"] != "+Inf"
    }
    assert bounds == {float(b) for b in HISTOGRAM_BUCKETS["genie_turn_latency"]}
    # No id, user or content in any label.
    for secret in (a, b, waiting, stuck.id, "user-a", "user-stuck", "after the outage", conv):
        assert secret and secret not in scrape.text
