"""Rules files (YAML) -> validated, compiled `RuleSet` (rules/model.py), with `file:line` problems.

pydantic checks the shape (rules/schema.py); everything else (regexes, keywords, handlers,
shadowing) is checked here with the line of the offending node.  Problems are collected, not
raised one by one, so `keyrouter check` shows every fault in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keyrouter.durations import parse_duration, parse_timeout
from keyrouter.message import canonical_receiver
from keyrouter.rules import conversations as conversation_model
from keyrouter.rules import patterns, plugin_path, registry, yamlpos
from keyrouter.rules.conversations import Conversation
from keyrouter.rules.emoji import EmojiNormalizer, has_emoji
from keyrouter.rules.entry_keys import LEGAL_HANDLERS, with_identities
from keyrouter.rules.model import HandlerEntry, Keyword, Location, Problem, Rule, RulesError, RuleSet
from keyrouter.rules.normalize import Normalizer, NormalizeSettings, settings_diff
from keyrouter.rules.schema import ExamplesModel, FileModel, RuleModel, explain_validation, validate_file
from keyrouter.settings import DEFAULT_MAX_BYTES, rules_max_bytes

MAX_FUZZY = 2
MIN_FUZZY_LENGTH = 4
#: The keys besides the handler's name an entry map may have: `- webhook: {...}` then
#: `timeout: 10s` or `optional: true` on the next line (docs/opt-out-duty.md).  Never handler
#: params, so they cannot collide with one.
TIMEOUT_KEY = "timeout"
OPTIONAL_KEY = "optional"
ENTRY_KEYS = (TIMEOUT_KEY, OPTIONAL_KEY)
#: A rule without `examples:` (one shared, read-only: building one per rule costs pydantic a
#: copy of each default list, 5% of loading 10,000 rules)
NO_EXAMPLES = ExamplesModel()


# ---------------------------------------------------------------- loading
def rule_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
    return [p]


def load_rules(path: str | Path, max_bytes: int | None = None, *,
               handlers: bool = True) -> RuleSet:
    """Read a rules file or folder.  Raises RulesError listing every problem (warnings aside).
    `max_bytes` bounds all files together, so parsing time and memory are bounded too; None
    reads KEYROUTER_RULES_MAX_BYTES (default 4 MiB), so every caller honours the setting.
    `handlers`: import the handlers the rules name (from the installed packages, the project
    folder and KEYROUTER_PLUGIN_PATH: keyrouter.plugin_path); False for commands that only read
    the store, which need rule names and survey choices, not the company's code."""
    if max_bytes is None:
        max_bytes = rules_max_bytes()
    if handlers:
        plugin_path.extend(path)
    builder = _Builder()
    builder.load_handlers = handlers
    builder.budget = builder.max_bytes = max_bytes
    files = rule_files(path)
    if not files:
        builder.error(Location(str(path), 1), "no *.yaml or *.yml files in this folder")
    for file in files:
        found = builder.read_file(file)
        if found is not None:
            builder.add_model(*found)
            yamlpos.release(found[0].rules)  # compiled into builder.rules
    return builder.finish()


class _Builder:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.rules: list[Rule] = []
        self.names: dict[str, Location] = {}
        self.default: tuple[HandlerEntry, ...] = ()
        self.default_where: Location | None = None
        self.first_normalizer: Normalizer | None = None
        self.first_settings: NormalizeSettings | None = None
        self.first_source = ""
        self.max_bytes = self.budget = DEFAULT_MAX_BYTES  # budget: what is left
        self.load_handlers = True
        self.conversations: list[Conversation] = []

    def error(self, where: Location, message: str) -> None:
        self.problems.append(Problem(where, message))

    def warn(self, where: Location, message: str) -> None:
        self.problems.append(Problem(where, message, "warning"))

    def read_file(self, file: Path) -> tuple[FileModel, _Locator] | None:
        """The file's validated model, or None after recording why it cannot be used."""
        name = str(file)
        try:
            text = yamlpos.read_limited(file, self.budget, self.max_bytes)
        except yamlpos.TooLarge as exc:
            self.error(Location(name, 1), str(exc))
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.error(Location(name, 1), f"cannot read: {exc}")
            return None
        self.budget -= len(text.encode("utf-8", "surrogatepass"))
        try:
            data, lines = yamlpos.load(text)
        except yamlpos.YamlProblem as exc:
            self.error(Location(name, exc.line), str(exc))
            return None
        at = _Locator(name, lines)
        if not isinstance(data, dict):
            self.error(at(()), "a rules file is a mapping with `version: 1` and `rules:`")
            return None
        model, errors = validate_file(data)
        if isinstance(data.get("rules"), list):
            yamlpos.release(data["rules"])  # validated into `model`: the raw dicts go in steps
        if model is None:
            found = [Problem(at(err["loc"]), explain_validation(err)) for err in errors]
            self.problems.extend(sorted(found, key=lambda p: p.where.line))
            return None
        return model, at

    def normalizer_of(self, model: FileModel, at: _Locator) -> tuple[Normalizer, str]:
        """The file's own normalizer (docs/rules.md, Normalization) and where its settings come from.
        Files of one folder whose settings differ get a warning naming both places: a file
        without `normalize:` does not inherit another file's `strip_prefixes`."""
        has_section = "normalize" in model.model_fields_set
        norm = model.normalize.model_dump()
        norm["strip_prefixes"] = tuple(norm["strip_prefixes"])
        settings = NormalizeSettings(**norm)
        where = at(("normalize",)) if has_section else Location(at.file, 1)
        source = str(where) if has_section else f"{at.file} (no normalize: the defaults)"
        if self.first_settings is None:
            self.first_settings, self.first_source = settings, source
        elif settings != self.first_settings:
            self.warn(where, f"normalize differs from {self.first_source}: "
                             f"{settings_diff(settings, self.first_settings)}; this file's "
                             "keywords and the texts its rules see use its own settings (copy "
                             "the section to share it)")
        return Normalizer(settings), source

    def add_model(self, model: FileModel, at: _Locator) -> None:
        normalizer, source = self.normalizer_of(model, at)
        self.first_normalizer = self.first_normalizer or normalizer
        for i, rule in enumerate(model.rules):
            self.add_rule(rule, ("rules", i), at, normalizer, source)
        if model.conversations is not None:
            for conv in conversation_model.build(model.conversations, at, normalizer, self.error,
                                                 parse_duration):
                first = next((c for c in self.conversations if c.id == conv.id), None)
                if first is not None:
                    self.error(conv.where, f"conversation '{conv.id}' is already declared at "
                                           f"{first.where}")
                else:
                    self.conversations.append(conv)
        if model.default is not None:
            where = at(("default",))
            if self.default_where is not None:
                self.error(where, f"a second `default:`; the first is at {self.default_where}")
            else:
                self.default_where = where
                timeout = self.timeout(model.default.timeout, at(("default", "timeout")))
                self.default = self.handlers(model.default.handlers, ("default", "handlers"), at, [],
                                             timeout)

    def timeout(self, value: object, where: Location) -> float | None:
        if value is None:
            return None
        try:
            return parse_timeout(value)
        except ValueError as exc:
            self.error(where, f"timeout: {exc}")
            return None

    def handlers(self, entries: list[Any], path: tuple[Any, ...], at: _Locator,
                 captures: list[str] | None = None,
                 timeout: float | None = None) -> tuple[HandlerEntry, ...]:
        out = []
        for i, entry in enumerate(entries):
            where = at((*path, i))
            own_timeout, optional = timeout, False
            if isinstance(entry, dict) and len(entry) > 1 and \
                    len([k for k in entry if k not in ENTRY_KEYS]) == 1:
                # `- webhook: {...}` with `timeout: 10s` / `optional: true` beside the name,
                # never among the params
                entry = dict(entry)
                if TIMEOUT_KEY in entry:
                    own_timeout = self.timeout(entry.pop(TIMEOUT_KEY), at((*path, i, TIMEOUT_KEY)))
                if OPTIONAL_KEY in entry:
                    optional = self.optional(entry.pop(OPTIONAL_KEY), at((*path, i, OPTIONAL_KEY)))
            if isinstance(entry, str):
                name, params = entry, dict[str, Any]()
            elif not isinstance(entry, dict) or len(entry) != 1:
                got = f"keys {', '.join(map(str, entry))}" if isinstance(entry, dict) else repr(entry)
                self.error(where, f"a handler entry is a name, or a map with ONE name -> params "
                                  f"(and optionally `timeout`, `optional`) (got {got})")
                continue
            else:
                name, raw = next(iter(entry.items()))
                name, params = str(name), {} if raw is None else raw
            why = registry.problem(name, load=self.load_handlers)
            if why is None and not isinstance(params, dict):
                why = f"{name}: params must be a map of names to values"
            if why is None:
                why = registry.params_problem(name, params, captures)
            if why is None and optional and name in LEGAL_HANDLERS:
                why = (f"{name}: a legal effect cannot be optional; it is retried until its "
                       "deadline (docs/opt-out-duty.md)")
            if why:
                self.error(where, why)
                continue
            out.append(HandlerEntry(name, params, own_timeout, optional))
        return with_identities(tuple(out))

    def optional(self, value: object, where: Location) -> bool:
        if not isinstance(value, bool):
            self.error(where, f"optional: write true or false (got {value!r})")
            return False
        return value

    def add_rule(self, model: RuleModel, path: tuple[Any, ...], at: _Locator,
                 normalizer: Normalizer, normalize_from: str = "") -> None:
        where = at(path)
        if model.name in self.names:
            self.error(at((*path, "name")),
                       f"rule name '{model.name}' is already used at {self.names[model.name]}")
        self.names.setdefault(model.name, where)
        if (model.keywords is None) == (model.pattern is None):
            both = "both `keywords` and" if model.keywords is not None else "neither `keywords` nor"
            self.error(where, f"rule '{model.name}' has {both} `pattern`: give exactly one")
            return
        if model.fuzzy > MAX_FUZZY:
            self.error(at((*path, "fuzzy")), f"fuzzy: {model.fuzzy} is too loose; at most {MAX_FUZZY}")
        max_age = None
        if model.max_age is not None:
            try:
                max_age = parse_duration(model.max_age)
            except ValueError as exc:
                self.error(at((*path, "max_age")), f"max_age: {exc}")
        receivers = None
        if model.receivers is not None:
            receivers = frozenset(canonical_receiver(r) for r in model.receivers)
        pattern, keywords = None, []
        if model.pattern is not None:
            pattern = self.rule_pattern(model, model.pattern, path, at)
        else:
            keywords = self.rule_keywords(model, path, at, normalizer)
        # a pattern that does not compile has unknown captures (None): its templates are not
        # judged, so the pattern's own error is the only one
        captures = list(pattern.groupindex) if pattern is not None else None if (
            model.pattern is not None) else ["rest"] if model.match == "first_word" else []
        timeout = self.timeout(model.timeout, at((*path, "timeout")))
        handlers = self.handlers(model.handlers, (*path, "handlers"), at, captures, timeout)
        names = [h.name for h in handlers]
        if "blacklist" in names and "reply" in names[names.index("blacklist"):]:
            self.warn(at((*path, "handlers")), "`reply` after `blacklist`: a blacklisted number "
                      "refuses the confirmation (452); put `reply` first")
        examples = model.examples or NO_EXAMPLES
        self.rules.append(Rule(
            name=model.name, index=len(self.rules), handlers=handlers, normalizer=normalizer,
            where=where, keywords=tuple(keywords), pattern=pattern, match=model.match or "exact",
            receivers=receivers, max_age=max_age, priority=model.priority, timeout=timeout,
            normalize_from=normalize_from,
            examples_match=tuple((t, at((*path, "examples", "match", i)))
                                 for i, t in enumerate(examples.match)),
            examples_no_match=tuple((t, at((*path, "examples", "no_match", i)))
                                    for i, t in enumerate(examples.no_match)),
        ))

    def rule_pattern(self, model: RuleModel, source: str, path: tuple[Any, ...],
                     at: _Locator) -> patterns.Regex | None:
        """The rule's compiled pattern, or None when it does not compile (an error is recorded)."""
        for key in ("match", "fuzzy"):
            if key in model.model_fields_set:
                self.error(at((*path, key)), f"`{key}` applies to keywords; a pattern always "
                                             "matches the whole normalized text")
        pattern = None
        try:
            pattern = patterns.compile_pattern(source)
        except patterns.PatternProblem as exc:
            self.error(at((*path, "pattern")), str(exc))
        if pattern is not None and patterns.nested_repetition(source):
            self.warn(at((*path, "pattern")), patterns.NESTED_WARNING)
        return pattern

    def rule_keywords(self, model: RuleModel, path: tuple[Any, ...], at: _Locator,
                      normalizer: Normalizer) -> list[Keyword]:
        """The rule's keywords, normalized with its file's settings; emoji ones as whole tokens."""
        keywords: list[Keyword] = []
        for i, written in enumerate(model.keywords or []):
            kw_where = at((*path, "keywords", i))
            if has_emoji(written):  # an emoji keyword: whole tokens, never fuzzy
                keywords.append(Keyword(written, EmojiNormalizer(normalizer)(written), 0,
                                        kw_where, emoji=True))
                continue
            normalized = normalizer(written)
            if not normalized:
                self.error(kw_where, f"keyword '{written}' normalizes to nothing (only "
                                     "punctuation, symbols or a strip_prefixes word)")
                continue
            fuzzy = min(model.fuzzy, MAX_FUZZY)
            if fuzzy and len(normalized) < MIN_FUZZY_LENGTH:
                self.warn(kw_where, f"fuzzy ignored for '{written}': keywords shorter than "
                                    f"{MIN_FUZZY_LENGTH} characters match exactly only")
                fuzzy = 0
            keywords.append(Keyword(written, normalized, fuzzy, kw_where))
        return keywords

    def add_start_rules(self) -> None:
        """Each conversation's start keywords as a rule after the files' rules: a start keyword
        an earlier rule claims is then a shadowing error."""
        for conv in self.conversations:
            params = {"id": conv.id}
            keywords = tuple(
                Keyword(w, conv.emoji(w), 0, where, emoji=True) if has_emoji(w)
                else Keyword(w, conv.normalizer(w), 0, where)
                for w, where in zip(conv.start, conv.start_where, strict=True))
            self.rules.append(Rule(
                name=conv.rule_name, index=len(self.rules), normalizer=conv.normalizer,
                handlers=(HandlerEntry("conversation", params),
                          HandlerEntry("conversation_reply", params)),
                where=conv.where, keywords=keywords))

    def finish(self) -> RuleSet:
        self.add_start_rules()
        self.check_shadowing()
        errors = [p for p in self.problems if p.severity == "error"]
        if errors:
            raise RulesError(self.problems)
        return RuleSet(rules=tuple(self.rules), default=self.default,
                       warnings=tuple(self.problems),
                       normalizer=self.first_normalizer or Normalizer(),
                       conversations=tuple(self.conversations))

    def check_shadowing(self) -> None:
        """A keyword claimed again by a later rule that can never win is an error (a later rule
        with a looser `fuzzy` can still win on typos, so it is allowed)."""
        claimed: dict[tuple[str, str], list[tuple[Rule, Keyword]]] = {}
        for rule in self.rules:
            for kw in rule.keywords:
                for earlier, earlier_kw in claimed.get((rule.match, kw.normalized), ()):
                    if (earlier.name != rule.name and kw.fuzzy <= earlier_kw.fuzzy
                            and _covers(earlier.receivers, rule.receivers)):
                        self.error(kw.where, f"keyword '{kw.written}' of rule '{rule.name}' can "
                                   f"never match: rule '{earlier.name}' claims it first at "
                                   f"{earlier_kw.where}")
                        break
                claimed.setdefault((rule.match, kw.normalized), []).append((rule, kw))


def _covers(earlier: frozenset[str] | None, later: frozenset[str] | None) -> bool:
    return earlier is None or (later is not None and later <= earlier)


class _Locator:
    def __init__(self, file: str, lines: dict[yamlpos.Path, int]) -> None:
        self.file, self.lines = file, lines

    def __call__(self, path: tuple[Any, ...]) -> Location:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return Location(self.file, self.lines.get(path, 1))
