"""YAML -> plain data plus the line of every key and list item, so errors can say `file:LINE`."""

from __future__ import annotations

import os
from typing import Any

import yaml

Path = tuple[str | int, ...]
#: Lists whose items stay exactly as written (YAML 1.1 would turn `NO` into False and `0850`
#: into an octal number; a keyword or a phone number is always text).
RAW_LISTS = frozenset({"keywords", "receivers", "match", "no_match", "strip_prefixes"})


#: Nesting a rules file never needs (a rule is 5 levels deep); deeper is an attack or a mistake.
MAX_DEPTH = 32
#: Values YAML aliases may add beyond the size of the file itself (the shipped rules share one
#: handler list between two rules; an alias bomb multiplies a list ten times per line).
ALIAS_ALLOWANCE = 10_000
#: The tags plain YAML values resolve to; anything else (`!!python/name:...`, `!custom`) is refused.
_CORE = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq",
                                             "timestamp"))
_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when pyyaml was built with it


class TooLarge(ValueError):
    """A rules file beyond the size limit; the text says how to raise the limit."""


def read_limited(file: Any, limit: int, total: int | None = None) -> str:
    """The UTF-8 text of `file`, reading at most `limit` + 1 bytes (a huge or endless file costs
    nothing), or TooLarge.  `total`: the limit for all files, when `limit` is what is left."""
    with open(file, "rb") as f:
        data = f.read(max(limit, 0) + 1)
        size = max(os.fstat(f.fileno()).st_size, len(data))
    if len(data) > limit:
        total = limit if total is None else total
        raise TooLarge(f"too large: {size:,} bytes, and rules files may hold {total:,} bytes in "
                       "all (raise KEYROUTER_RULES_MAX_BYTES if that is meant)")
    return data.decode("utf-8")


class YamlProblem(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


#: libyaml's words -> what to do about them, in plain language.
_INDENT_HINT = ("; check the indentation on this line and the one before: the keys of one rule "
                "start in the same column (under `name:`), each list item starts with `- ` in the "
                "same column, and only spaces indent (no tabs)")
_HINTS = (
    ("unknown escape character", "; inside double quotes a backslash starts an escape: write a "
     "regex in single quotes (pattern: 'rez (\\d+)')"),
    ("cannot start any token", "; a character YAML does not allow here: often a tab (indent "
     "with spaces only), or a value starting with @, ` or % (put it in quotes)"),
    ("did not find expected '-' indicator", _INDENT_HINT),
    ("did not find expected key", _INDENT_HINT),
    ("expected <block end>", _INDENT_HINT),
    ("mapping values are not allowed here", "; a `key: value` where YAML expects none: check "
     "the indentation, or put a value holding ': ' in quotes"),
)


def syntax_hint(problem: str) -> str:
    """A plain-language fix for a libyaml problem, or ""."""
    return next((hint for words, hint in _HINTS if words in problem), "")


def load(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse one YAML document.  Raises YamlProblem for syntax errors, duplicate keys, aliases
    that expand too far, nesting deeper than MAX_DEPTH and tags other than plain values', each
    with its line.  Time and memory stay proportional to the text (the caller limits its size).
    """
    helper = yaml.SafeLoader("")  # resolves implicit tags and constructs scalars
    try:
        root = _compose(yaml.parse(text, Loader=_Parser), helper)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        said = str(exc.problem or exc)
        raise YamlProblem(line, f"YAML syntax: {said}{syntax_hint(said)}") from None
    except yaml.YAMLError as exc:  # e.g. a character YAML does not allow, without a mark
        raise YamlProblem(1, f"YAML syntax: {exc}") from None
    lines: dict[Path, int] = {}
    if root is None:
        return None, lines
    lines[()] = root.start_mark.line + 1
    try:
        return _convert(root, (), lines, helper, raw=False), lines
    except yaml.MarkedYAMLError as exc:  # a value a standard tag cannot hold (`!!int x`)
        mark = exc.problem_mark or exc.context_mark
        raise YamlProblem(mark.line + 1 if mark else 1, f"YAML: {exc.problem or exc}") from None
    finally:
        helper.dispose()
        if isinstance(root, yaml.MappingNode):
            for pair in root.value:
                if len(pair) == 2 and isinstance(pair[1], yaml.SequenceNode):
                    release(pair[1].value)


#: Items freed per step by `release`.
RELEASE_STEP = 500


def release(items: list[Any]) -> None:
    """Empty a large list RELEASE_STEP items at a time.  Freeing 10,000 rules' worth of nodes or
    models in one go is one long C call with the GIL held (tens of milliseconds); in steps, a
    reload in a thread lets the event loop run between them."""
    while items:
        del items[-RELEASE_STEP:]


def _compose(events: Any, helper: yaml.SafeLoader) -> yaml.Node | None:
    """Events -> the document's node tree, with an explicit stack (no recursion limit to hit).
    An alias shares its anchor's node; the values aliases add are counted, so they can at most
    double the document (plus ALIAS_ALLOWANCE), which is what stops an alias bomb."""
    root: yaml.Node | None = None
    stack: list[tuple[yaml.Node, list[int]]] = []  # open collections with their value counts
    anchors: dict[str, tuple[yaml.Node, int] | None] = {}  # None: still open
    written = expanded = documents = 0
    for event in events:
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.CollectionEndEvent):
            node, (size,) = stack.pop()
            node.end_mark = event.end_mark
            if getattr(node, "anchor", None) is not None:
                anchors[node.anchor] = (node, size)
            _attach(stack, node, size)
            root = node if not stack else root
            continue
        if isinstance(event, yaml.AliasEvent):
            node, size = _anchored(anchors, event.anchor, line)
            expanded += size
            if expanded > max(ALIAS_ALLOWANCE, written):
                raise YamlProblem(line, f"YAML aliases expand this file past {expanded:,} values "
                                        "(an alias bomb?); write the values out")
            _attach(stack, node, size)
            continue
        documents += isinstance(event, yaml.DocumentStartEvent)
        if documents > 1:
            raise YamlProblem(line, "a rules file is one YAML document (no second `---`)")
        if not isinstance(event, yaml.NodeEvent):  # stream and document boundaries
            continue
        written += 1
        if isinstance(event, yaml.ScalarEvent):
            tag = _tag(event, yaml.ScalarNode, event.value, event.implicit, helper, line)
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            if event.anchor is not None:
                anchors[event.anchor] = (node, 1)
            _attach(stack, node, 1)
            root = node if not stack else root
            continue
        kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
        tag = _tag(event, kind, None, event.implicit, helper, line)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        if event.anchor is not None:
            node.anchor = event.anchor
            anchors[event.anchor] = None
        stack.append((node, [1]))
        if len(stack) > MAX_DEPTH:
            raise YamlProblem(line, f"nesting deeper than {MAX_DEPTH} levels; a rules file needs "
                                    "about 5")
    return root


def _anchored(anchors: dict[str, tuple[yaml.Node, int] | None], anchor: str,
              line: int) -> tuple[yaml.Node, int]:
    """The node (and its value count) an alias names; an alias to an anchor still open, or to
    none, is a problem."""
    target = anchors.get(anchor)
    if target is None:
        why = "inside its own anchor" if anchor in anchors else "with no anchor before it"
        raise YamlProblem(line, f"YAML alias *{anchor} {why}")
    return target


def _attach(stack: list[tuple[yaml.Node, list[int]]], node: yaml.Node, size: int) -> None:
    """Add `node` (with `size` values under it) to the open collection, if any."""
    if not stack:
        return
    parent, count = stack[-1]
    count[0] += size
    if isinstance(parent, yaml.SequenceNode):
        parent.value.append(node)
    elif parent.value and len(parent.value[-1]) == 1:  # the key is there: this is its value
        parent.value[-1] = (parent.value[-1][0], node)
    else:
        parent.value.append((node,))


def _tag(event: Any, kind: type, value: str | None, implicit: Any, helper: yaml.SafeLoader,
         line: int) -> str:
    tag = event.tag
    if tag is None or tag == "!":
        return str(helper.resolve(kind, value, implicit))
    if tag not in ALLOWED_TAGS:
        shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
        raise YamlProblem(line, f"YAML tag {shown} is not allowed in a rules file (only plain "
                                "values: text, numbers, true/false, lists and maps)")
    return str(tag)


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], loader: yaml.SafeLoader,
             raw: bool) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem(line, "a key must be a plain name, not a list or a map")
            key = _convert(key_node, path, lines, loader, raw=True)
            if key in out:
                raise YamlProblem(line, f"key '{key}' appears twice in one mapping")
            lines[(*path, key)] = line
            out[key] = _convert(value_node, (*path, key), lines, loader,
                                raw=key in RAW_LISTS and isinstance(value_node, yaml.SequenceNode))
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_convert(item, (*path, i), lines, loader, raw=False) if not (
                raw and isinstance(item, yaml.ScalarNode)) else item.value)
        return items
    if raw:
        return node.value
    return loader.construct_object(node, deep=True)
