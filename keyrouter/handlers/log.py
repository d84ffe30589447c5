"""`log`: one structured INFO line per message, personal data kept out by default.

The line is `inbound sms {json}` with `id`, `rule`, `keyword`, `captures`, `fuzzy`, `sender`
(masked: `+90535***4818`), `receiver` (our own number or short code) and `received_at`.  JSON keeps
one message on one line whatever its text holds (newlines, quotes), so a text cannot forge log
lines.

Params: `include_text: true` adds the raw `text`.  Without it, nothing of the message's wording is
logged: the free-text capture `rest` (the words after a `first_word` keyword) is left out, and a
capture that is a mobile number is masked like the sender.  The raw sender number is never logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from keyrouter.handlers.context import Context
from keyrouter.handlers.templating import unknown_params
from keyrouter.masking import mask_number
from keyrouter.message import Message, to_e164
from keyrouter.retries import PermanentError
from keyrouter.rules.router import Match

__all__ = ["PARAMS", "handle", "one_line", "params_problem", "record"]

PARAMS = ("include_text",)
#: Captures that carry the message's own wording, logged only with include_text.
TEXT_CAPTURES = frozenset({"rest"})


def params_problem(params: Mapping[str, Any]) -> str | None:
    """Why these params cannot work for `log`, or None (for `keyrouter check` and at run time)."""
    problem = unknown_params(params, PARAMS, "log")
    if problem:
        return problem
    if not isinstance(params.get("include_text", False), bool):
        return "log: include_text must be true or false"
    return None


def record(message: Message, match: Match | None, rule: str, include_text: bool = False) -> dict[str, Any]:
    """The fields of the log line (also handy for other handlers' logs)."""
    captures: dict[str, str] = {}
    if match is not None:
        for name, value in match.captures.items():
            if name in TEXT_CAPTURES and not include_text:
                continue
            text = "" if value is None else str(value)
            captures[name] = mask_number(text) if to_e164(text) else text
    fields: dict[str, Any] = {
        "id": message.id,
        "rule": match.rule if match else rule,
        "matched": match is not None,
        "keyword": match.keyword if match else None,
        "captures": captures,
        "fuzzy": bool(match.fuzzy) if match else False,
        "sender": mask_number(message.sender),
        "receiver": message.receiver,
        "received_at": message.received_at.isoformat(),
    }
    if include_text:
        fields["text"] = message.text
    return fields


async def handle(message: Message, match: Match | None, context: Context) -> None:
    problem = params_problem(context.params)
    if problem:
        raise PermanentError(problem)
    include_text = bool(context.params.get("include_text", False))
    fields = record(message, match, context.rule, include_text)
    context.logger.info("inbound sms %s", one_line(fields))


def one_line(fields: Mapping[str, Any]) -> str:
    """JSON on one line: readable Turkish, but every line separator escaped (json.dumps leaves
    U+0085, U+2028 and U+2029 raw when ensure_ascii is off)."""
    return json.dumps(fields, ensure_ascii=False).translate(_LINE_BREAKS)


_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
