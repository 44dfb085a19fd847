"""Ground-truth counters for ``GET /_sim/stats``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

ENDPOINTS: tuple[str, ...] = (
    "create_conversation",
    "list_conversations",
    "get_conversation",
    "delete_conversation",
    "send_message",
    "list_messages",
    "upload",
    "reconnect",
    "events",
    "skill_approval",
    "auth_link",
    "connection_reject",
    "business_approval",
    "feedback",
)
"""Endpoint names, E1..E14 in order; used by ``requests`` and by faults."""


@dataclass(slots=True)
class ConversationStats:
    """What one conversation received.

    ``*_posts`` count every request that reached the simulator for an existing
    conversation (including ones answered 4xx or by an injected fault);
    ``messages_accepted`` and ``skill_decisions_applied`` count what took effect.
    """

    message_posts: int = 0
    messages_accepted: int = 0
    skill_decision_posts: Counter[str] = field(default_factory=Counter)
    skill_decisions_applied: Counter[str] = field(default_factory=Counter)
    connection_reject_posts: Counter[str] = field(default_factory=Counter)
    auth_link_posts: Counter[str] = field(default_factory=Counter)
    feedback_posts: int = 0
    runs: list[str] = field(default_factory=list)

    def as_json(self, state: str) -> dict[str, object]:
        """Serialise with the conversation's current ``state``."""
        return {
            "message_posts": self.message_posts,
            "messages_accepted": self.messages_accepted,
            "skill_decision_posts": dict(self.skill_decision_posts),
            "skill_decisions_applied": dict(self.skill_decisions_applied),
            "connection_reject_posts": dict(self.connection_reject_posts),
            "auth_link_posts": dict(self.auth_link_posts),
            "feedback_posts": self.feedback_posts,
            "runs": list(self.runs),
            "state": state,
        }


@dataclass(slots=True)
class Stats:
    """Request counts per endpoint and per-conversation counters (reset by ``/_sim/reset``)."""

    requests: Counter[str] = field(default_factory=Counter)
    conversations: dict[str, ConversationStats] = field(default_factory=dict)

    def conversation(self, conversation_id: str) -> ConversationStats:
        """The counters of a conversation, created on first use."""
        stats = self.conversations.get(conversation_id)
        if stats is None:
            stats = self.conversations[conversation_id] = ConversationStats()
        return stats

    def requests_json(self) -> dict[str, int]:
        """Every endpoint name with its count (zero included)."""
        return {name: self.requests[name] for name in ENDPOINTS}
