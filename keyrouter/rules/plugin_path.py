"""Where `package.module:function` handler names are imported from besides the installed
packages: the project folder (the rules folder's parent, so `acme_handlers/` beside `rules/`
works with no install) and the folders in KEYROUTER_PLUGIN_PATH (docs/getting-started-notes.md).

They are appended to `sys.path`, after the installed packages, which win on a name clash."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "KEYROUTER_PLUGIN_PATH"

#: The folders added so far, in order: named in the error for a module that is not found.
added: list[str] = []


def project_folders(rules: str | Path) -> list[Path]:
    """The folders a rules path puts on the import path: a rules folder's parent; for a rules
    file, its own folder and that folder's parent (`rules/acme.yaml` -> `rules/` and `.`)."""
    path = Path(rules).resolve()
    if path.is_dir():
        return [path.parent]
    return [path.parent, path.parent.parent]


def env_folders() -> list[Path]:
    raw = os.environ.get(ENV, "")
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p.strip()]


def extend(rules: str | Path) -> None:
    """Put KEYROUTER_PLUGIN_PATH's folders, then the project folders of `rules`, at the end of
    `sys.path` (each once)."""
    for folder in [*env_folders(), *project_folders(rules)]:
        text = str(folder)
        if text not in sys.path:
            sys.path.append(text)
        if text not in added:
            added.append(text)


def not_found_hint() -> str:
    """The fix for a handler module that cannot be imported, naming where it was looked for."""
    where = ", ".join(added) if added else "no project folder (no rules loaded yet)"
    return (f"looked in the installed packages and {where}: install the package that holds it "
            f"(pip install -e .), or add the folder that holds it to {ENV}")
