"""/v1/users/{user_id}/conversations: a user's conversations, their messages, context window and statistics."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from stratus_db.api.context import Caller, Db
from stratus_db.api.fields import (
    NOT_BLANK,
    Cursor,
    DescribedAs,
    Limit,
    NotNull,
    StoredJsonObject,
    changes_schema,
    integral,
    pattern,
)
from stratus_db.api.problems import responses
from stratus_db.conversations.manager import ConversationManager
from stratus_db.conversations.reads import MAX_CONTEXT_TOKENS
from stratus_db.conversations.schemas import (
    Content,
    ContextWindow,
    Conversation,
    ConversationStats,
    Message,
    MessageInput,
    SearchHit,
    Title,
    UsageStats,
)
from stratus_db.errors import NotFoundError
from stratus_db.kit.schemas import Page
from stratus_db.kit.validation import INT32_MAX, SafeJsonObject
from stratus_db.models.conversation import ConversationStatus

router = APIRouter(prefix="/v1/users/{user_id}/conversations", tags=["conversations"])
One = "/{conversation_id}"


ConversationTitle = Annotated[Title, pattern(NOT_BLANK)]
JsonObject = Annotated[SafeJsonObject, DescribedAs(StoredJsonObject)]


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: ConversationTitle | None = None
    context: JsonObject | None = None


class ConversationChanges(BaseModel):
    """The fields to change; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=changes_schema)

    # The library reads null as left out: a body of nulls would change nothing, which it refuses.
    title: Annotated[ConversationTitle | None, NotNull] = None
    context: Annotated[JsonObject | None, NotNull] = None


# The library's own model of a message (conversations/schemas.py MessageInput): its limits are the API's.
class NewMessage(MessageInput):
    """A message to append."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    content: Annotated[Content, pattern(NOT_BLANK)]
    """Kept exactly as given."""
    metadata: JsonObject = Field(default_factory=dict)
    message_id: uuid.UUID | None = None
    """Given, a repeated call (a retry) returns the message stored the first time instead of storing it again."""

    @field_validator("metadata", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        # As the library's add_message reads it, and as the API always took it.
        return {} if value is None else value

    @field_validator("tokens_used", mode="before")
    @classmethod
    def _integral(cls, value: object) -> object:
        return integral(value)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=Conversation, responses=responses(403, 404)
)
async def create_conversation(
    user_id: uuid.UUID, body: NewConversation, caller: Caller, db: Db
) -> Conversation:
    return await ConversationManager(db).create_conversation(
        user_id, body.title, body.context, principal=caller
    )


@router.get("", response_model=Page[Conversation], responses=responses(403))
async def list_conversations(
    user_id: uuid.UUID,
    caller: Caller,
    db: Db,
    status: ConversationStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Conversation]:
    return await ConversationManager(db).list_conversations(
        user_id, status=status, limit=limit, cursor=cursor, principal=caller
    )


@router.get("/search", response_model=list[SearchHit], responses=responses(403))
async def search_messages(
    user_id: uuid.UUID,
    caller: Caller,
    db: Db,
    q: str = Query(min_length=1, max_length=1000),
    limit: int = Query(20, ge=1, le=100),
) -> list[SearchHit]:
    return await ConversationManager(db).search_messages(user_id, q, limit, principal=caller)


@router.get(One, response_model=Conversation, responses=responses(403, 404))
async def get_conversation(
    user_id: uuid.UUID, conversation_id: uuid.UUID, caller: Caller, db: Db
) -> Conversation:
    found = await ConversationManager(db).get_conversation(conversation_id, user_id, principal=caller)
    if found is None:
        raise NotFoundError(f"user {user_id} has no conversation {conversation_id}")
    return found


@router.patch(One, response_model=Conversation, responses=responses(403, 404, 409))
async def update_conversation(
    user_id: uuid.UUID, conversation_id: uuid.UUID, body: ConversationChanges, caller: Caller, db: Db
) -> Conversation:
    return await ConversationManager(db).update_conversation(
        conversation_id, user_id, **body.model_dump(exclude_unset=True), principal=caller
    )


@router.post(f"{One}/archive", response_model=Conversation, responses=responses(403, 404, 409))
async def archive_conversation(
    user_id: uuid.UUID, conversation_id: uuid.UUID, caller: Caller, db: Db
) -> Conversation:
    return await ConversationManager(db).archive_conversation(conversation_id, user_id, principal=caller)


@router.post(f"{One}/restore", response_model=Conversation, responses=responses(403, 404, 409))
async def restore_conversation(
    user_id: uuid.UUID, conversation_id: uuid.UUID, caller: Caller, db: Db
) -> Conversation:
    return await ConversationManager(db).restore_conversation(conversation_id, user_id, principal=caller)


@router.delete(One, response_model=Conversation, responses=responses(403, 404, 409))
async def delete_conversation(
    user_id: uuid.UUID, conversation_id: uuid.UUID, caller: Caller, db: Db
) -> Conversation:
    """Marks the conversation deleted (restorable); its messages stay until retention purges it."""
    return await ConversationManager(db).delete_conversation(conversation_id, user_id, principal=caller)


@router.post(
    f"{One}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=Message,
    responses=responses(403, 404, 409),
)
async def add_message(
    user_id: uuid.UUID, conversation_id: uuid.UUID, body: NewMessage, caller: Caller, db: Db
) -> Message:
    return await ConversationManager(db).add_message(
        conversation_id,
        user_id,
        body.content,
        body.message_type,
        body.agent_name,
        body.metadata,
        body.tokens_used,
        body.response_time,
        message_id=body.message_id,
        principal=caller,
    )


@router.get(f"{One}/messages", response_model=list[Message], responses=responses(403, 404))
async def get_messages(
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    caller: Caller,
    db: Db,
    limit: Limit = 50,
    after_seq: int | None = Query(None, ge=0, le=INT32_MAX),
    before_seq: int | None = Query(None, ge=1, le=INT32_MAX),
) -> list[Message]:
    """A page of messages in order: `after_seq` for the next page forward, `before_seq` for the one before."""
    return await ConversationManager(db).get_messages(
        conversation_id, user_id, limit=limit, after_seq=after_seq, before_seq=before_seq, principal=caller
    )


@router.get(f"{One}/context", response_model=ContextWindow, responses=responses(403, 404))
async def get_context(
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    caller: Caller,
    db: Db,
    max_tokens: int = Query(ge=1, le=MAX_CONTEXT_TOKENS, description="The budget of the window, in tokens."),
) -> ContextWindow:
    return await ConversationManager(db).get_context(conversation_id, user_id, max_tokens, principal=caller)


@router.get(f"{One}/stats", response_model=ConversationStats, responses=responses(403, 404))
async def get_conversation_stats(
    user_id: uuid.UUID, conversation_id: uuid.UUID, caller: Caller, db: Db
) -> ConversationStats:
    return await ConversationManager(db).get_conversation_stats(conversation_id, user_id, principal=caller)


stats_router = APIRouter(prefix="/v1/stats", tags=["statistics"])


@stats_router.get("/usage", response_model=UsageStats, responses=responses(403))
async def usage(
    caller: Caller,
    db: Db,
    user_id: Annotated[
        uuid.UUID | None, Query(description="One user's usage; all users' without it (administrators).")
    ] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> UsageStats:
    """Conversations, messages and tokens by day and by agent, over [since, until) (instants with a time zone)."""
    return await ConversationManager(db).get_usage_stats(user_id, since, until, principal=caller)
