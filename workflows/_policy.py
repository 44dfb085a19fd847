"""Which rule governs a pause: the conversation policy, refined per skill or connector.

``ConversationPolicy`` sets conversation-wide defaults; its ``skills`` and
``connections`` lists refine them by name (a glob, first match wins). ``for_skill`` and
``for_connection`` resolve the two into one ``ItemPolicy``, the only shape the rest of
the workflow reads, so the fallback rules live here and nowhere else. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Literal

from workflows.models import ConversationPolicy, OnTimeout


@dataclass(frozen=True)
class ItemPolicy:
    rule: str | None
    """The matching rule's ``match``, or None when the defaults apply."""
    approvers: tuple[str, ...]
    approver_groups: tuple[str, ...]
    timeout: timedelta
    on_timeout: OnTimeout
    escalate_to: tuple[str, ...] | None
    """Endpoints told at an escalation; None: every configured endpoint."""
    escalation_timeout: timedelta
    notify: tuple[str, ...] | None
    """Endpoints told of the pause; None: every configured endpoint."""
    auto: Literal["approve", "reject"] | None = None
    auto_reason: str | None = None
    required_approvals: int = 1

    def may_decide(self, actor: str, groups: list[str]) -> bool:
        """Anyone, unless names or groups are listed; then a listed name or group."""
        if not self.approvers and not self.approver_groups:
            return True
        return actor in self.approvers or bool(set(groups) & set(self.approver_groups))

    def who(self) -> str:
        """Who may decide, in words, for refusals and the card."""
        if not self.approvers and not self.approver_groups:
            return "anyone with access to the namespace"
        names = [*self.approvers, *(f"group {g}" for g in self.approver_groups)]
        return ", ".join(names)


def for_skill(policy: ConversationPolicy, skill_name: str | None) -> ItemPolicy:
    rule = next((r for r in policy.skills if fnmatchcase(skill_name or "", r.match)), None)
    approvers = policy.approvers if rule is None or rule.approvers is None else rule.approvers
    notify = rule.notify if rule is not None and rule.notify is not None else policy.notify
    return ItemPolicy(
        rule=rule.match if rule else None,
        approvers=tuple(approvers),
        approver_groups=tuple(rule.approver_groups if rule else ()),
        timeout=(rule.timeout if rule and rule.timeout else policy.approval_timeout),
        on_timeout=(rule.on_timeout if rule and rule.on_timeout else policy.on_approval_timeout),
        escalate_to=tuple(rule.escalate_to) if rule and rule.escalate_to else None,
        escalation_timeout=rule.escalation_timeout if rule else policy.escalation_timeout,
        notify=tuple(notify) if notify is not None else None,
        auto=rule.auto if rule else None,
        auto_reason=rule.auto_reason if rule else None,
        required_approvals=rule.required_approvals if rule else 1,
    )


def for_connection(policy: ConversationPolicy, connector: str | None) -> ItemPolicy:
    rule = next((r for r in policy.connections if fnmatchcase(connector or "", r.match)), None)
    notify = rule.notify if rule is not None and rule.notify is not None else policy.notify
    return ItemPolicy(
        rule=rule.match if rule else None,
        approvers=tuple(policy.approvers),
        approver_groups=(),
        timeout=(rule.timeout if rule and rule.timeout else policy.connection_timeout),
        on_timeout=rule.on_timeout if rule and rule.on_timeout else "reject",
        escalate_to=tuple(rule.escalate_to) if rule and rule.escalate_to else None,
        escalation_timeout=rule.escalation_timeout if rule else policy.escalation_timeout,
        notify=tuple(notify) if notify is not None else None,
    )


def endpoints(wanted: tuple[str, ...] | None, configured: list[str]) -> list[str]:
    """The configured endpoints a pause goes to (unknown names are skipped)."""
    if wanted is None:
        return list(configured)
    return [e for e in configured if e in wanted]
