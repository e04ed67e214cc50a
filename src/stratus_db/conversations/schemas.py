from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import Field, StrictFloat, StrictInt, StrictStr, StringConstraints, model_validator

from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import (
    InputModel,
    NonEmptyStr,
    SafeJsonObject,
    TextContent,
    TextEnum,
    Timestamp,
)
from stratus_db.models.conversation import ConversationStatus
from stratus_db.models.message import MessageType

MAX_BATCH = 10_000
"""Most messages one add_messages call appends (import_messages takes any number)."""
MAX_CONTENT_CHARS = 1_000_000
"""Longest message accepted (about 285k tokens): far above any model's context, well below a mistake."""

Title = Annotated[NonEmptyStr, StringConstraints(max_length=500)]
AgentName = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
]
Content = Annotated[TextContent, StringConstraints(max_length=MAX_CONTENT_CHARS)]


class ConversationCreate(InputModel):
    user_id: uuid.UUID
    title: Title | None = None
    context: SafeJsonObject = Field(default_factory=dict)


class ConversationUpdate(InputModel):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    title: Title | None = None
    context: SafeJsonObject | None = None


class MessageInput(InputModel):
    """One message of `add_messages` or `import_messages`: the arguments of `add_message` after the owner."""

    content: Content
    message_type: TextEnum[MessageType] = MessageType.user_input
    agent_name: AgentName | None = None
    metadata: SafeJsonObject = Field(default_factory=dict)
    tokens_used: Annotated[StrictInt, Field(ge=0, le=10_000_000)] | None = None
    response_time: Annotated[StrictFloat, Field(ge=0, le=86_400, allow_inf_nan=False)] | None = None


class MessageImport(MessageInput):
    """One message of import_messages: it may keep the time it was originally written."""

    created_at: Timestamp | None = None


class MessageCreate(MessageInput):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    message_id: uuid.UUID | None = None
    """The caller's id for the message, which makes a repeated call safe (add_message)."""


class MessageBatch(InputModel):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    messages: Annotated[list[MessageInput], Field(min_length=1, max_length=MAX_BATCH)]


class MessageImportBatch(InputModel):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    messages: list[MessageImport]


class MessageQuery(InputModel):
    user_id: uuid.UUID
    query: StrictStr
    limit: Annotated[StrictInt, Field(ge=1, le=100)]


class StatsWindow(InputModel):
    user_id: uuid.UUID | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> StatsWindow:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be later than since")
        return self


class Conversation(FrozenModel):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    title: str | None
    status: ConversationStatus
    context: dict[str, Any]
    summary: str | None
    summarized_through_seq: int
    """Messages 1…summarized_through_seq are folded into `summary`: stored and readable, out of the context window."""
    summarized_tokens: int
    message_count: int
    total_tokens: int
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime


class Message(FrozenModel):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    seq: int
    agent_name: str | None
    message_type: MessageType
    content: str
    metadata: dict[str, Any]
    tokens_used: int
    response_time: float | None
    created_at: datetime


class ContextWindow(FrozenModel):
    """What an agent sends its model: the summary of the older history (when it fits) and the newest messages.

    `total_tokens` = `summary_tokens` (0 without a summary) + the messages' tokens, never more than the budget.
    """

    conversation_id: uuid.UUID
    max_tokens: int
    summary: str | None
    summary_tokens: int
    messages: list[Message]
    total_tokens: int
    omitted_messages: int
    """Unsummarized messages older than the window that did not fit."""


class ImportResult(FrozenModel):
    conversation_id: uuid.UUID
    imported: int
    first_seq: int | None
    """None when nothing was imported."""
    last_seq: int | None
    total_tokens: int
    """Tokens of the imported messages."""


class SearchHit(FrozenModel):
    """One message found by search_messages, with its relevance in [0, 1)."""

    message: Message
    score: float


class DailyUsage(FrozenModel):
    day: date
    """UTC calendar day."""
    conversations: int
    """Conversations started that day."""
    messages: int
    tokens: int


class AgentUsage(FrozenModel):
    agent_name: str | None
    """None groups the messages no agent wrote (the users' own, system messages)."""
    messages: int
    tokens: int
    average_response_time: float | None
    p95_response_time: float | None
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont(0.95)."""


class UsageStats(FrozenModel):
    user_id: uuid.UUID | None
    """None: every user."""
    since: datetime | None
    until: datetime | None
    conversations: int
    messages: int
    tokens: int
    per_day: list[DailyUsage]
    per_agent: list[AgentUsage]
    per_type: dict[MessageType, int]


class ConversationStats(FrozenModel):
    conversation_id: uuid.UUID
    messages: int
    tokens: int
    first_message_at: datetime | None
    last_message_at: datetime | None
    per_agent: list[AgentUsage]
    per_type: dict[MessageType, int]


class CompressionResult(FrozenModel):
    conversation_id: uuid.UUID
    folded_messages: int
    """Messages folded by this call (0: nothing to do, nothing written)."""
    summarized_through_seq: int
    summary_tokens: int
