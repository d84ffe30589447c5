"""`acme_reservation`: "REZ 123456" -> the reservation's details by SMS, or "unknown code".

It looks the code up in a small data file and answers through keyrouter's own `reply` handler,
so the reply gets the same safe templating, max_age, 451/452 handling and idempotency.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from importlib.resources import files
from typing import Any

from keyrouter import Context, Match, Message
from keyrouter.handlers import reply

FOUND = ("Sayın {name}, {date} {time} tarihli {people} kişilik {place} rezervasyonunuz "
         "onaylıdır. Kod: {code}")
UNKNOWN = "{code} kodlu bir rezervasyon bulamadık. Lütfen kodu kontrol edin."


@cache
def bookings() -> dict[str, dict[str, str]]:
    return json.loads(files("acme_keyrouter").joinpath("reservations.json").read_text(encoding="utf-8"))


async def lookup(message: Message, match: Match | None, context: Context) -> None:
    captures: dict[str, Any] = dict(match.captures) if match else {}
    code = captures.get("code", "")
    booking = bookings().get(code)
    template = context.params.get("found", FOUND) if booking else context.params.get("unknown", UNKNOWN)
    context.logger.info("reservation %s: %s", code, "found" if booking else "unknown")
    answer_match = Match(rule=context.rule, keyword=None, captures={**(booking or {}), **captures})
    passed_on = {k: v for k, v in context.params.items() if k in ("sender", "max_age")}
    answer_params = {"text": template, **passed_on}
    await reply.handle(message, answer_match, replace(context, params=answer_params))
