"""Safe `{name}` templates for handler params (`reply: {text: ...}`, `survey: {choice: ...}`).

Only the TEMPLATE is parsed, by one regex; values are inserted literally and never looked at
again, so a message text or capture holding `{__class__}`, `{0}`, `%s` or `{choice}` stays exactly
that text.  No `str.format`, no `%`, no attribute or index access: a placeholder is a bare name.

Syntax:
- `{name}`: `name` is a letter or `_` then letters, digits, `_` (a capture name or a message field);
- `{{` and `}}`: a literal `{` and `}`;
- any other `{` or `}` is a mistake (`{ choice }`, `{0}`, `{a.b}`, an unclosed `{`).

Names, at send time: the match's captures, and the message fields `id`, `sender`, `receiver`,
`keyword` (empty when the rule matched by pattern), `rule`.  A capture with the name of a field
wins (the rule author named it on purpose).  A name with no value is a `TemplateError`, a
`PermanentError`: the rule needs fixing, retrying cannot help.

The two small helpers every built-in shares (`require_client`, `unknown_params`) live here too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from keyrouter.handlers.context import Context
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.retries import PermanentError
from keyrouter.rules.router import Match
from keyrouter.suggest import did_you_mean

__all__ = [
    "MESSAGE_FIELDS",
    "TemplateError",
    "message_values",
    "placeholders",
    "render",
    "require_client",
    "template_problem",
    "unknown_params",
]

#: Message fields every template may use, whatever the rule.
MESSAGE_FIELDS = ("id", "sender", "receiver", "keyword", "rule")

# One token at a time: an escaped brace, a placeholder, a stray brace, or a run of plain text.
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|([{}])|[^{}]+")


class TemplateError(PermanentError):
    """A template that cannot be filled: bad syntax, or a name with no value."""


def _tokens(template: str) -> Iterable[tuple[str, str | None, int]]:
    """(literal text or "", placeholder name or None, position) for each piece of `template`.
    Raises TemplateError on a stray brace."""
    for m in _TOKEN.finditer(template):
        token, name, stray = m.group(0), m.group(1), m.group(2)
        if stray is not None:
            raise TemplateError(_stray_problem(template, m.start()))
        if name is not None:
            yield "", name, m.start()
        elif token == "{{":
            yield "{", None, m.start()
        elif token == "}}":
            yield "}", None, m.start()
        else:
            yield token, None, m.start()


def _stray_problem(template: str, at: int) -> str:
    brace = template[at]
    snippet = template[at : at + 20]
    return (
        f"template has a stray '{brace}' at character {at + 1} ({snippet!r}): a placeholder is "
        "{name} with a plain name (letters, digits, _); write {{ or }} for a literal brace"
    )


def placeholders(template: str) -> list[str]:
    """The placeholder names in `template`, in order, each once.  Raises TemplateError on bad
    syntax."""
    seen: dict[str, None] = {}
    for _, name, _ in _tokens(template):
        if name is not None:
            seen.setdefault(name, None)
    return list(seen)


def template_problem(text: object, names: Iterable[str] | None = None) -> str | None:
    """Why `text` is not a usable template, or None.  For rules validation (`keyrouter check`).

    With `names` (the rule's capture names; the message fields are always known), a placeholder
    that no message of the rule could fill is a problem too; without, only the syntax is checked.
    """
    if not isinstance(text, str):
        return f"template must be a string, not {type(text).__name__}"
    try:
        used = placeholders(text)
    except TemplateError as exc:
        return str(exc)
    if names is not None:
        known = set(MESSAGE_FIELDS) | set(names)
        unknown = [n for n in used if n not in known]
        if unknown:
            return _unknown_problem(unknown, sorted(known))
    return None


def _unknown_problem(unknown: list[str], known: list[str]) -> str:
    listed = ", ".join("{" + n + "}" for n in unknown)
    return f"template uses {listed}, which has no value here; known names: {', '.join(known)}"


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill `template` from `values`, inserting each value as it is (never parsed).
    Raises TemplateError on bad syntax or a placeholder missing from `values`."""
    out: list[str] = []
    missing: list[str] = []
    for literal, name, _ in _tokens(template):
        if name is None:
            out.append(literal)
        elif name in values:
            out.append(str(values[name]))
        elif name not in missing:
            missing.append(name)
    if missing:
        raise TemplateError(_unknown_problem(missing, sorted(values)))
    return "".join(out)


def message_values(message: Message, match: Match | None, rule: str) -> dict[str, str]:
    """What a template may use for this message: message fields, then the captures (which win).
    `rule` is the context's rule name ("default" when nothing matched)."""
    values = {
        "id": message.id,
        "sender": message.sender,
        "receiver": message.receiver,
        "keyword": (match.keyword if match else None) or "",
        "rule": match.rule if match else rule,
    }
    if match is not None:
        values.update({str(k): "" if v is None else str(v) for k, v in match.captures.items()})
    return values


# ------------------------------------------------------------------ shared by the built-ins
def require_client(context: Context, handler: str) -> IletiMerkezi:
    """The provider client, or a PermanentError saying which credentials are missing."""
    if context.client is None:
        raise PermanentError(
            f"{handler}: no iletiMerkezi client: the credentials ILETIMERKEZI_API_KEY and "
            "ILETIMERKEZI_API_HASH are missing"
        )
    return context.client


def unknown_params(params: Mapping[str, object], allowed: Iterable[str], handler: str) -> str | None:
    """A problem text naming params `handler` does not know (a typo is a rules error), or None."""
    if not isinstance(params, Mapping):
        return f"{handler}: params must be a map, not {type(params).__name__}"
    allowed = tuple(allowed)
    unknown = sorted(str(k) for k in params if k not in allowed)
    if not unknown:
        return None
    known = ", ".join(allowed) if allowed else "none"
    named = ", ".join(f"{u}{did_you_mean(u, allowed)}" for u in unknown)
    return f"{handler}: unknown param(s) {named}; known: {known}"
