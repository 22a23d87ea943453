"""Per-example rules of the data checklist, one table per stage, each case named after what it shows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ftjob.api.data import CleaningSpec
from ftjob_trainer.data.checks import Drop, DropReason, Message, check_content, parse_conversation

SYSTEM = {"role": "system", "content": "You answer questions about the product."}
USER = {"role": "user", "content": "How do I reset my password?"}
ASSISTANT = {"role": "assistant", "content": "Open Settings, choose Security, then Reset password."}


def line(messages: Any) -> str:
    return json.dumps({"messages": messages})


STRUCTURAL_DROPS = [
    pytest.param('{"messages": [', DropReason.INVALID_JSON, "Expecting", id="truncated-json"),
    pytest.param("{'messages': []}", DropReason.INVALID_JSON, "double quotes", id="python-repr-not-json"),
    pytest.param(
        '[{"role": "user"}]', DropReason.WRONG_SCHEMA, "is an array, not an object", id="top-level-array"
    ),
    pytest.param('{"conversation": []}', DropReason.WRONG_SCHEMA, 'no "messages"', id="messages-missing"),
    pytest.param(
        '{"messages": "hi"}', DropReason.WRONG_SCHEMA, "is a string, not an array", id="messages-not-list"
    ),
    pytest.param(
        line([USER, "hello"]), DropReason.WRONG_SCHEMA, "messages[1] is a string", id="message-not-object"
    ),
    pytest.param(
        line([{"content": "hi"}]), DropReason.WRONG_SCHEMA, "messages[0] has no role", id="role-missing"
    ),
    pytest.param(
        line([USER, {"role": "tool", "content": "{}"}]),
        DropReason.WRONG_SCHEMA,
        'messages[1].role is "tool"',
        id="role-unknown",
    ),
    pytest.param(
        line([USER, {"role": "assistant", "content": None}]),
        DropReason.WRONG_SCHEMA,
        "messages[1].content is null",
        id="content-null",
    ),
    pytest.param(
        line([{"role": "user", "content": [{"type": "text", "text": "hi"}]}, ASSISTANT]),
        DropReason.WRONG_SCHEMA,
        "messages[0].content is an array",
        id="content-parts-list",
    ),
    pytest.param(line([]), DropReason.MISSING_TURN, "no user and no assistant turn", id="no-messages"),
    pytest.param(line([SYSTEM, USER]), DropReason.MISSING_TURN, "no assistant turn", id="no-assistant"),
    pytest.param(line([SYSTEM, ASSISTANT]), DropReason.MISSING_TURN, "no user turn", id="no-user"),
    pytest.param(
        line([ASSISTANT, USER, ASSISTANT]),
        DropReason.BAD_ROLE_ORDER,
        "messages[0] is assistant",
        id="starts-with-assistant",
    ),
    pytest.param(
        line([USER, SYSTEM, ASSISTANT]),
        DropReason.BAD_ROLE_ORDER,
        "messages[1] is a system",
        id="system-not-first",
    ),
    pytest.param(
        line([SYSTEM, SYSTEM, USER, ASSISTANT]), DropReason.BAD_ROLE_ORDER, "messages[1]", id="two-systems"
    ),
    pytest.param(
        line([USER, USER, ASSISTANT]),
        DropReason.BAD_ROLE_ORDER,
        "messages[1] is user",
        id="two-users-in-a-row",
    ),
    pytest.param(
        line([USER, ASSISTANT, USER]), DropReason.BAD_ROLE_ORDER, "ends with a user turn", id="ends-with-user"
    ),
    # The first failing rule wins: a message with an unknown role is a schema error even though the
    # conversation also lacks an assistant turn.
    pytest.param(
        line([USER, {"role": "bot", "content": "x"}]),
        DropReason.WRONG_SCHEMA,
        "bot",
        id="schema-before-turns",
    ),
    pytest.param(line([ASSISTANT, ASSISTANT]), DropReason.MISSING_TURN, "no user", id="turns-before-order"),
]


@pytest.mark.parametrize(("text", "reason", "detail"), STRUCTURAL_DROPS)
def test_structural_drop(text: str, reason: DropReason, detail: str) -> None:
    result = parse_conversation(text)

    assert isinstance(result, Drop)
    assert result.reason is reason
    assert detail in result.detail


ACCEPTED = [
    pytest.param([USER, ASSISTANT], id="single-turn"),
    pytest.param([SYSTEM, USER, ASSISTANT], id="system-first"),
    pytest.param([SYSTEM, USER, ASSISTANT, USER, ASSISTANT], id="multi-turn"),
    pytest.param([{**USER, "name": "alice"}, {**ASSISTANT, "weight": 1}], id="unknown-message-keys-allowed"),
]


@pytest.mark.parametrize("messages", ACCEPTED)
def test_structurally_valid(messages: list[dict[str, Any]]) -> None:
    result = parse_conversation(json.dumps({"messages": messages, "id": 7}))

    assert result == tuple(Message(m["role"], m["content"]) for m in messages)


def convo(user: str, *answers: str) -> tuple[Message, ...]:
    turns = [Message("user", user)]
    for answer in answers:
        turns += [Message("assistant", answer), Message("user", user)]
    return tuple(turns[:-1])


CONTENT_DROPS = [
    pytest.param(convo("What is LoRA?", ""), {}, DropReason.SHORT_ANSWER, "has 0 words", id="empty-answer"),
    pytest.param(
        convo("What is LoRA?", "Low-rank adapters.", "Yes."),
        {"minAssistantWords": 2},
        DropReason.SHORT_ANSWER,
        "messages[3] (assistant) has 1 words",
        id="any-assistant-turn-counts",
    ),
    pytest.param(
        convo("  ", "Hello!"), {}, DropReason.SHORT_USER_MESSAGE, "has 0 characters", id="blank-user"
    ),
    pytest.param(
        convo("Hi", "Hello, how can I help?"),
        {"minUserChars": 10},
        DropReason.SHORT_USER_MESSAGE,
        "fewer than minUserChars 10",
        id="short-user",
    ),
    pytest.param(
        convo("Extract the date.", '```json\n{"date": "2024-05-01"}\n```'),
        {"outputFormat": "json"},
        DropReason.INVALID_JSON_ANSWER,
        "is not JSON",
        id="fenced-json",
    ),
    pytest.param(
        convo("Extract the date.", '{"date": "2024-05-01",}'),
        {"outputFormat": "json"},
        DropReason.INVALID_JSON_ANSWER,
        "Expecting property name",
        id="trailing-comma",
    ),
    pytest.param(
        convo("?", "no"),
        {"minAssistantWords": 2, "minUserChars": 2, "outputFormat": "json"},
        DropReason.SHORT_ANSWER,
        "has 1 words",
        id="answer-length-before-user-length-before-json",
    ),
]


@pytest.mark.parametrize(("conversation", "cleaning", "reason", "detail"), CONTENT_DROPS)
def test_content_drop(
    conversation: tuple[Message, ...], cleaning: dict[str, Any], reason: DropReason, detail: str
) -> None:
    result = check_content(conversation, CleaningSpec.model_validate(cleaning))

    assert isinstance(result, Drop)
    assert result.reason is reason
    assert detail in result.detail


CONTENT_ACCEPTED = [
    pytest.param(convo("What is LoRA?", "Adapters."), {}, id="defaults-accept-one-word"),
    pytest.param(convo("Date?", '{"date": "2024-05-01"}'), {"outputFormat": "json"}, id="json-object"),
    pytest.param(convo("List?", " [1, 2, 3]\n"), {"outputFormat": "json"}, id="json-array-with-whitespace"),
    pytest.param(convo("Anything", "not json at all"), {"outputFormat": "text"}, id="text-format-skips-json"),
]


@pytest.mark.parametrize(("conversation", "cleaning"), CONTENT_ACCEPTED)
def test_content_accepted(conversation: tuple[Message, ...], cleaning: dict[str, Any]) -> None:
    assert check_content(conversation, CleaningSpec.model_validate(cleaning)) is None


def test_reason_names_are_stable_and_ordered() -> None:
    # Automation and dashboards key on these names, and counting depends on this order.
    assert [reason.value for reason in DropReason] == [
        "lineTooLong",
        "invalidJson",
        "wrongSchema",
        "tooManyMessages",
        "missingTurn",
        "badRoleOrder",
        "duplicate",
        "nearDuplicate",
        "shortAnswer",
        "shortUserMessage",
        "invalidJsonAnswer",
        "overlapWithTrain",
    ]
