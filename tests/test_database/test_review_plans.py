"""Defects found reviewing the typed write plans, the token counter and the operator commands."""

from __future__ import annotations

import pytest

from stratus_db import ConfigurationError, ConversationManager, Database, UserManager
from tests.fixtures.factories import count_rows, create_user


@pytest.mark.parametrize("counter", [lambda text: len(text) / 4, lambda text: -1])
async def test_a_token_count_that_is_not_a_count_is_a_configuration_error_and_writes_nothing(
    db: Database, users: UserManager, counter: object
) -> None:
    hosted = Database(db.settings, token_counter=counter)  # type: ignore[arg-type]
    try:
        conversations = ConversationManager(hosted)
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        with pytest.raises(ConfigurationError, match="token_counter"):
            await conversations.add_message(conv.conversation_id, user.user_id, "qual o METAR de SBGR?")
        with pytest.raises(ConfigurationError, match="token_counter"):
            await conversations.add_messages(conv.conversation_id, user.user_id, [{"content": "olá"}])
    finally:
        await hosted.close()
    assert await count_rows(db, "messages") == 0
