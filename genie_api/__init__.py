"""Typed, tolerant, resumable async client for the Workato genie Headless API.

Quick start::

    from contextlib import aclosing
    from genie_api import ApiKeyAuth, GenieClient, RunReader

    async with GenieClient("https://genie-api.workato.com", ApiKeyAuth(key)) as client:
        conv = await client.create_conversation(genie, user_id=user)
        reader = RunReader(client, genie, conv.conversation_id, user_id=user)
        async with aclosing(reader.send("How much PTO do I have?")) as events:
            async for event in events:
                ...  # every event of the run exactly once, in order
        saved = reader.cursor.model_dump_json()  # resume later with RunReader(..., cursor=…)

Everything importable from here is public; the ``_modules`` are not.
"""

from genie_api._auth import ApiKeyAuth, OAuthAuth
from genie_api._client import ClientTimeouts, GenieClient, format_timestamp
from genie_api._errors import (
    AUTH_FAILED,
    CALL_NOT_FOUND,
    CHAT_INTERFACE_NOT_CONFIGURED,
    CONNECTION_ALREADY_RESOLVED,
    CONVERSATION_BUSY,
    FILE_TOO_LARGE,
    INVALID_FILE_ID,
    INVALID_LAST_EVENT_ID,
    MESSAGE_EMPTY,
    MESSAGE_TOO_LONG,
    RUN_NOT_FOUND,
    SKILL_CALL_ALREADY_RESOLVED,
    USER_NONACTIVE_OR_MISSING,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GenieAPIError,
    NotAcceptableError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    StreamResumeError,
    TransportError,
    UnprocessableError,
)
from genie_api._events import (
    EVENT_TYPES,
    AgentMessage,
    BusinessApprovalRequired,
    EventType,
    GenieEvent,
    ProcessingFinished,
    ProcessingStarted,
    RuntimeConnectionAuthFailed,
    RuntimeConnectionAuthRequired,
    RuntimeConnectionAuthSuccess,
    SkillCompleted,
    SkillConfirmationRequired,
    SkillFailed,
    SkillRunning,
    SkillStopped,
    SystemPing,
    SystemStreamInterrupted,
    UnknownEvent,
    parse_event,
)
from genie_api._models import (
    AuthLink,
    AuthLinkStatus,
    Conversation,
    ConversationDetail,
    ConversationPage,
    EventPage,
    Message,
    MessagePage,
    SendAck,
    UploadedFile,
)
from genie_api._reader import ResumePolicy, RunCursor, RunReader

__all__ = [
    "AUTH_FAILED",
    "CALL_NOT_FOUND",
    "CHAT_INTERFACE_NOT_CONFIGURED",
    "CONNECTION_ALREADY_RESOLVED",
    "CONVERSATION_BUSY",
    "EVENT_TYPES",
    "FILE_TOO_LARGE",
    "INVALID_FILE_ID",
    "INVALID_LAST_EVENT_ID",
    "MESSAGE_EMPTY",
    "MESSAGE_TOO_LONG",
    "RUN_NOT_FOUND",
    "SKILL_CALL_ALREADY_RESOLVED",
    "USER_NONACTIVE_OR_MISSING",
    "AgentMessage",
    "ApiKeyAuth",
    "AuthLink",
    "AuthLinkStatus",
    "AuthenticationError",
    "BadRequestError",
    "BusinessApprovalRequired",
    "ClientTimeouts",
    "ConflictError",
    "Conversation",
    "ConversationDetail",
    "ConversationPage",
    "EventPage",
    "EventType",
    "GenieAPIError",
    "GenieClient",
    "GenieEvent",
    "Message",
    "MessagePage",
    "NotAcceptableError",
    "NotFoundError",
    "OAuthAuth",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProcessingFinished",
    "ProcessingStarted",
    "ProtocolError",
    "RateLimitedError",
    "ResumePolicy",
    "RunCursor",
    "RunReader",
    "RuntimeConnectionAuthFailed",
    "RuntimeConnectionAuthRequired",
    "RuntimeConnectionAuthSuccess",
    "SendAck",
    "ServerError",
    "SkillCompleted",
    "SkillConfirmationRequired",
    "SkillFailed",
    "SkillRunning",
    "SkillStopped",
    "StreamResumeError",
    "SystemPing",
    "SystemStreamInterrupted",
    "TransportError",
    "UnknownEvent",
    "UnprocessableError",
    "UploadedFile",
    "format_timestamp",
    "parse_event",
]
