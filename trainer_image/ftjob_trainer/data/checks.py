"""Per-example rules. Each returns a `Drop` naming the first problem it finds, or passes the example on.

The declaration order of `DropReason` is the order in which the checks run: an example failing several
rules is counted once, under the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, TypeAlias

import msgspec

from ftjob.api.data import CleaningSpec

from .. import bounded_json

DEFAULT_MAX_MESSAGES: Final = CleaningSpec().max_messages

Role: TypeAlias = Literal["system", "user", "assistant"]
ROLES: Final[tuple[Role, ...]] = ("system", "user", "assistant")
_QUOTE_CHARS = 60
# JSON may spell a lone UTF-16 surrogate ("\ud800"); Python then holds a string that cannot be written as
# UTF-8, so the cleaned file (and any report quoting it) would fail to write.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class DropReason(StrEnum):
    """Why an example was dropped; the values are stable names that automation may rely on."""

    LINE_TOO_LONG = "lineTooLong"
    INVALID_JSON = "invalidJson"
    WRONG_SCHEMA = "wrongSchema"
    TOO_MANY_MESSAGES = "tooManyMessages"
    MISSING_TURN = "missingTurn"
    BAD_ROLE_ORDER = "badRoleOrder"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "nearDuplicate"
    SHORT_ANSWER = "shortAnswer"
    SHORT_USER_MESSAGE = "shortUserMessage"
    INVALID_JSON_ANSWER = "invalidJsonAnswer"
    OVERLAP_WITH_TRAIN = "overlapWithTrain"


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason
    detail: str


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A chat turn reduced to what training uses; other keys of the input message are not carried."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


Conversation: TypeAlias = tuple[Message, ...]


class _ChatLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The one shape nearly every line has: `messages` only, each message `role` and `content` only."""

    messages: tuple[Message, ...]


_chat_line_decoder = msgspec.json.Decoder(_ChatLine)
_decode_chat_line = _chat_line_decoder.decode


def decode_chat_lines(data: bytes) -> list[_ChatLine]:
    """Lines of the usual shape, decoded at once (msgspec's newline-delimited JSON); the caller makes sure
    the values are one per line."""
    return _chat_line_decoder.decode_lines(data)


def parse_conversation(text: str, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> Conversation | Drop:
    """The structural checks, in order: `invalidJson` (nesting deeper than bounded_json.MAX_DEPTH
    included), `wrongSchema`, `tooManyMessages`, `missingTurn`, `badRoleOrder`.

    A line of exactly the usual shape is decoded straight into `Message`s (msgspec, in C); any other
    line, valid or not, goes through `json.loads` and the checks one by one. msgspec refuses whatever
    `json.loads` refuses (and more: lone surrogates, NaN, extra keys), and for what it accepts both
    give the same messages (the last of repeated keys wins in both), so the verdicts are the same."""
    try:
        conversation = tuple(_decode_chat_line(text).messages)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeEncodeError):
        # UnicodeEncodeError: a str holding a lone surrogate (never one read from a file), which msgspec
        # cannot take; `json.loads` can, and gives the verdict.
        pass
    else:
        if len(conversation) <= max_messages:
            return check_structure(conversation) or conversation
    return _parse_slowly(text, max_messages=max_messages)


def check_structure(conversation: Conversation) -> Drop | None:
    """`check_turns`, then `check_role_order`; both depend only on the sequence of roles, which few
    datasets vary much, so short sequences' verdicts are remembered."""
    roles = tuple(message.role for message in conversation)
    try:
        return _STRUCTURE_VERDICTS[roles]
    except KeyError:
        pass
    verdict = check_turns(conversation) or check_role_order(conversation)
    if len(roles) <= 16 and len(_STRUCTURE_VERDICTS) < 4096:
        _STRUCTURE_VERDICTS[roles] = verdict
    return verdict


_STRUCTURE_VERDICTS: dict[tuple[str, ...], Drop | None] = {}


def _parse_slowly(text: str, *, max_messages: int) -> Conversation | Drop:
    try:
        document = bounded_json.loads(text, position="column")
    except bounded_json.JsonRefused as err:
        return Drop(DropReason.INVALID_JSON, str(err))
    conversation = check_schema(document, max_messages=max_messages)
    if isinstance(conversation, Drop):
        return conversation
    return check_turns(conversation) or check_role_order(conversation) or conversation


def check_schema(document: object, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> Conversation | Drop:
    if not isinstance(document, dict):
        return _wrong_schema(f"the line is {_json_type(document)}, not an object")
    if "messages" not in document:
        return _wrong_schema('no "messages" key')
    messages = document["messages"]
    if not isinstance(messages, list):
        return _wrong_schema(f'"messages" is {_json_type(messages)}, not an array')
    if len(messages) > max_messages:
        # Counted before any message is looked at: the cost of a line must not grow with a list it drops.
        return Drop(
            DropReason.TOO_MANY_MESSAGES,
            f"{len(messages)} messages, more than maxMessages {max_messages}",
        )
    conversation: list[Message] = []
    for index, item in enumerate(messages):
        message = _check_message(index, item)
        if isinstance(message, Drop):
            return message
        conversation.append(message)
    return tuple(conversation)


def _check_message(index: int, item: object) -> Message | Drop:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        return _wrong_schema(f"{where} is {_json_type(item)}, not an object")
    if "role" not in item or "content" not in item:
        return _wrong_schema(f"{where} has no {'role' if 'role' not in item else 'content'}")
    role, content = item["role"], item["content"]
    if role not in ROLES:
        return _wrong_schema(f"{where}.role is {_show(role)}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        return _wrong_schema(f"{where}.content is {_json_type(content)}, not a string")
    surrogate = _SURROGATE.search(content)
    if surrogate is not None:
        return Drop(
            DropReason.INVALID_JSON,
            f"{where}.content has an unpaired surrogate escape (\\u{ord(surrogate.group()):04x} at character "
            f"{surrogate.start() + 1}), which is not Unicode text",
        )
    return Message(role, content)


def check_turns(conversation: Conversation) -> Drop | None:
    roles = {message.role for message in conversation}
    missing = [role for role in ("user", "assistant") if role not in roles]
    if missing:
        return Drop(DropReason.MISSING_TURN, f"no {' and no '.join(missing)} turn")
    return None


def check_role_order(conversation: Conversation) -> Drop | None:
    """Chat templates (and the loss mask) assume: an optional system message, then user and assistant
    turns alternating, starting with user and ending with assistant."""
    start = 1 if conversation[0].role == "system" else 0
    expected: Role = "user"
    for index in range(start, len(conversation)):
        role = conversation[index].role
        if role == "system":
            return _bad_order(f"messages[{index}] is a system message; only the first message may be one")
        if role != expected:
            return _bad_order(f"messages[{index}] is {role} where {expected} was expected")
        expected = "assistant" if role == "user" else "user"
    if conversation[-1].role != "assistant":
        return _bad_order("the conversation ends with a user turn, not an assistant turn")
    return None


def check_content(conversation: Conversation, cleaning: CleaningSpec) -> Drop | None:
    """The content checks, in order: `shortAnswer`, `shortUserMessage`, `invalidJsonAnswer`."""
    return (
        check_answer_words(conversation, cleaning.min_assistant_words)
        or check_user_chars(conversation, cleaning.min_user_chars)
        or (check_json_answers(conversation) if cleaning.output_format == "json" else None)
    )


def check_answer_words(conversation: Conversation, min_words: int) -> Drop | None:
    for index, message in enumerate(conversation):
        if message.role != "assistant" or (
            min_words == 1 and message.content and not message.content.isspace()
        ):
            # With the default of 1, "has a word" is "is not all whitespace" (str.split and str.isspace
            # agree on what whitespace is), which needs no list of words.
            continue
        words = len(message.content.split())
        if words < min_words:
            return Drop(
                DropReason.SHORT_ANSWER,
                f"messages[{index}] (assistant) has {words} words, fewer than minAssistantWords "
                f"{min_words}: {_quote(message.content)}",
            )
    return None


def check_user_chars(conversation: Conversation, min_chars: int) -> Drop | None:
    if min_chars <= 0:
        return None
    for index, message in _turns(conversation, "user"):
        # Surrounding whitespace carries nothing a model can learn from, so it does not count.
        chars = len(message.content.strip())
        if chars < min_chars:
            return Drop(
                DropReason.SHORT_USER_MESSAGE,
                f"messages[{index}] (user) has {chars} characters, fewer than minUserChars "
                f"{min_chars}: {_quote(message.content)}",
            )
    return None


def check_json_answers(conversation: Conversation) -> Drop | None:
    for index, message in _turns(conversation, "assistant"):
        try:
            bounded_json.loads(message.content)
        except bounded_json.JsonRefused as err:
            return Drop(
                DropReason.INVALID_JSON_ANSWER,
                f"messages[{index}] (assistant) is not JSON ({err}): {_quote(message.content)}",
            )
    return None


def _turns(conversation: Conversation, role: Role) -> list[tuple[int, Message]]:
    return [(index, message) for index, message in enumerate(conversation) if message.role == role]


def _wrong_schema(detail: str) -> Drop:
    return Drop(DropReason.WRONG_SCHEMA, detail)


def _bad_order(detail: str) -> Drop:
    return Drop(DropReason.BAD_ROLE_ORDER, detail)


def _json_type(value: object) -> str:
    """The JSON type of a parsed value, as a phrase: "an array", "null"."""
    names: Sequence[tuple[type, str]] = (
        (bool, "a boolean"),
        (int, "a number"),
        (float, "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
    )
    if value is None:
        return "null"
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _show(value: object) -> str:
    return _writable(json.dumps(value, ensure_ascii=False)[:_QUOTE_CHARS])


def _quote(text: str) -> str:
    """A short, single-line rendering of user text for a detail message."""
    shown = _writable(json.dumps(text[:_QUOTE_CHARS], ensure_ascii=False))
    return shown if len(text) <= _QUOTE_CHARS else shown[:-1] + '…"'


def _writable(text: str) -> str:
    """`text` with lone surrogates replaced, so that a detail can always be written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)
