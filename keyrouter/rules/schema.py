"""The rules file's shape (pydantic models, checked before everything else) and how a shape error
becomes one sentence a rules author can act on ("did you mean" for an unknown key).  What the
shape means, with lines, is keyrouter/rules.py."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from keyrouter.rules.normalize import Locale
from keyrouter.suggest import did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormalizeModel(Strict):  # the YAML face of NormalizeSettings
    locale: Locale = "tr"
    fold_accents: bool = True
    strip_punctuation: bool = True
    strip_prefixes: list[str] = []


class ExamplesModel(Strict):
    match: list[str] = []
    no_match: list[str] = []


HandlerEntryModel = Any  # a name or {name: params}: checked by rules._Builder.handlers, with lines


class RuleModel(Strict):
    name: str = Field(min_length=1)
    keywords: list[str] | None = None
    pattern: str | None = None
    match: Literal["exact", "first_word"] | None = None
    fuzzy: int = Field(0, ge=0)
    receivers: list[str] | None = None
    max_age: str | None = None
    priority: Literal["high", "normal"] = "normal"
    timeout: Any = None  # checked by rules._Builder.timeout, with its line
    handlers: list[HandlerEntryModel] = Field(min_length=1)
    examples: ExamplesModel | None = None


class DefaultModel(Strict):
    timeout: Any = None  # checked by rules._Builder.timeout, with its line
    handlers: list[HandlerEntryModel] = Field(min_length=1)


class FileModel(Strict):
    version: Literal[1]
    normalize: NormalizeModel = NormalizeModel()
    rules: list[RuleModel] = []
    default: DefaultModel | None = None
    conversations: Any = None  # checked by keyrouter.conversations.model, with lines


#: Rules validated per pydantic call.  pydantic validates in Rust with the GIL held, so one call
#: for 10,000 rules (0.1 s) would stall the event loop of a worker reloading in a thread; a call
#: for this many takes a few milliseconds.
CHUNK = 500
_RULES: TypeAdapter[list[RuleModel]] = TypeAdapter(list[RuleModel])


def validate_file(data: dict[Any, Any]) -> tuple[FileModel | None, list[Any]]:
    """(the file's model, or None with pydantic's errors, each `loc` from the file's root).
    Large `rules:` lists are validated CHUNK rules at a time, with the same errors."""
    rules = data.get("rules")
    if not isinstance(rules, list) or len(rules) <= CHUNK:
        try:
            return FileModel.model_validate(data), []
        except ValidationError as exc:
            return None, list(exc.errors())
    errors: list[Any] = []
    head = None
    try:
        head = FileModel.model_validate({**data, "rules": []})
    except ValidationError as exc:
        errors.extend(exc.errors())
    models: list[RuleModel] = []
    for start in range(0, len(rules), CHUNK):
        try:
            models.extend(_RULES.validate_python(rules[start:start + CHUNK]))
        except ValidationError as exc:
            errors.extend({**err, "loc": ("rules", start + int(err["loc"][0]), *err["loc"][1:])}
                          for err in exc.errors())
    if errors or head is None:
        return None, errors
    head.rules = models
    return head, []


def _keys_beside(parents: list[str]) -> list[str]:
    """The keys allowed in the map at `parents` (`["rules"]`: a rule's keys), for suggestions."""
    model: Any = FileModel
    for key in parents:
        field_info = (model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel)
                      else None)
        inner = [t for t in _types_in(field_info.annotation) if isinstance(t, type)
                 and issubclass(t, BaseModel)] if field_info else []
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _types_in(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    return [annotation] if not args else [t for a in args for t in _types_in(a)]


#: Union members show up as extra loc parts (`str`, `list[str]`, `dict[str,any]`); they mean
#: nothing to users.  Only whole type names: a key such as `strip_prefix` is kept.
_TYPE_PART = re.compile(r"(str|int|float|bool|none|(list|dict|tuple|set)\[.*\])", re.I)
_WHERE = {"rules": "a rule", "normalize": "normalize", "examples": "examples",
          "default": "default"}


def explain_validation(err: Any) -> str:
    """pydantic's error -> one sentence a rules author can act on."""
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    loc = [p for p in loc if not _TYPE_PART.fullmatch(p)]
    field_name = loc[-1] if loc else "file"
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _keys_beside(loc[:-1])
        where = f" in {_WHERE.get(loc[-2], loc[-2])}" if len(loc) > 1 else ""
        hint = did_you_mean(field_name, allowed) or (
            f" (allowed: {', '.join(allowed)})" if allowed else "")
        return f"unknown key '{field_name}'{where}{hint}"
    if kind == "missing":
        return f"missing required key '{field_name}'"
    if kind == "literal_error":
        return f"{field_name}: {err['msg'].lower()} (got {err['input']!r})"
    if kind == "too_short":
        return f"{field_name}: must not be empty"
    return f"{field_name}: {err['msg']} (got {err['input']!r})"
