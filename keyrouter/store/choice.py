"""Which store a command uses, and how a store URL is shown.

- `redact_store_url`: the one way a store URL reaches any output (a Redis URL may hold a
  password; it is shown as `***`).
- `read_flags` / `reading_store`: the `--store` and `--sandbox` flags of the commands that only
  read (dead-letters, survey results, optouts, dashboard), and the settings they lead to.
- `require_existing`: a read command never creates a store; a missing SQLite file is one line
  naming the store it looked at and where `replay --sandbox` writes (docs/getting-started-notes.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from keyrouter.settings import Settings

#: `replay --sandbox` writes its own store unless --store says otherwise: what the fake provider
#: "did" must never mark messages done in the real store.
SANDBOX_STORE = "sqlite:///keyrouter-sandbox.sqlite3"
HIDDEN = "***"


class StoreChoiceError(ValueError):
    """A store choice that cannot work; the message is one line for a person."""


def redact_store_url(url: str) -> str:
    """`url` with its password replaced by `***`; user, host, port, db and query kept.  A user
    part alone (`redis://word@host`) is hidden too: people write a password there by mistake."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
    authority = rest[:end]
    if "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:{HIDDEN}" if colon else HIDDEN
    return f"{scheme}://{shown}@{host}{rest[end:]}"


def sqlite_file(url: str) -> Path | None:
    """The file of an `sqlite:///path` URL; None for other stores and in-memory SQLite."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not rest.startswith("/") or rest == "/":
        return None
    return Path(rest[1:])


def read_flags(p: argparse.ArgumentParser, default: str) -> None:
    """`--store` and `--sandbox` on a command that only reads."""
    p.add_argument("--store", help=f"store URL (env KEYROUTER_STORE, default {default})")
    p.add_argument("--sandbox", action="store_true",
                   help=f"read the store `replay --sandbox` writes ({SANDBOX_STORE})")


def reading_store(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with the store `--sandbox` names; `--sandbox` with `--store` is an error."""
    if not getattr(args, "sandbox", False):
        return settings
    if getattr(args, "store", None):
        raise StoreChoiceError("give --sandbox or --store, not both (--sandbox reads "
                               f"{SANDBOX_STORE})")
    return settings.model_copy(update={"store": SANDBOX_STORE})


def where_from(args: argparse.Namespace) -> str:
    if getattr(args, "sandbox", False):
        return "--sandbox"
    if getattr(args, "store", None):
        return "--store"
    if os.environ.get("KEYROUTER_STORE"):
        return "KEYROUTER_STORE"
    return "the default; KEYROUTER_STORE or --store to choose"


def require_existing(args: argparse.Namespace, settings: Settings) -> None:
    """Raise StoreChoiceError when the store is an SQLite file that does not exist: reading it
    would create an empty one and show nothing."""
    path = sqlite_file(settings.store)
    if path is None or path.exists() or not path.parent.is_dir():
        return  # a missing folder: opening the store says so, and creates nothing either
    sandbox = sqlite_file(SANDBOX_STORE)
    hint = ("" if getattr(args, "sandbox", False)
            else f"; `replay --sandbox` writes {sandbox}: add --sandbox to read it"
            + (" (it exists here)" if sandbox is not None and sandbox.exists() else ""))
    raise StoreChoiceError(f"no store at {path} ({redact_store_url(settings.store)}, "
                           f"{where_from(args)}): nothing was recorded there{hint}")
