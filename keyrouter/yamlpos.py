"""YAML -> plain data plus the line of every key and list item, so errors can say `file:LINE`."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]
#: Lists whose items stay exactly as written (YAML 1.1 would turn `NO` into False and `0850`
#: into an octal number; a keyword or a phone number is always text).
RAW_LISTS = frozenset({"keywords", "receivers", "match", "no_match", "strip_prefixes"})


class YamlProblem(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def load(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse one YAML document.  Raises YamlProblem for syntax errors and duplicate keys."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlProblem(line, f"YAML syntax: {exc.problem or exc}") from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    if root is None:
        return None, lines
    lines[()] = root.start_mark.line + 1
    return _convert(root, (), lines, loader, raw=False), lines


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
