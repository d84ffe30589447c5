"""How the Redis store talks to its scripts: string arguments escaped on the way out (codec.py),
replies unescaped on the way back, and the one-time key move before a store's first script."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson

from keyrouter.store.codec import MARK, loads, read_row, unescape
from keyrouter.store.codec import escape as _escape


class ScriptHost(Protocol):
    """What a script needs of its store: the client, and the key move done once before use."""

    client: Any
    moved: bool

    async def move_legacy_keys(self) -> int: ...


def escape(value: str) -> str:
    """codec.escape for Redis: NUL is fine in a Redis string (and earlier versions wrote it as is)."""
    return _escape(value, nul=False)


def unescaped(value: bytes | str) -> str:
    """A string the store wrote through `escape` (codec.py), as it was given."""
    return unescape(value.decode() if isinstance(value, bytes) else value)


def id_list(ids: Iterable[str]) -> bytes:
    """Ids as one JSON array argument, read by the script with `cjson.decode`: a batch of a
    thousand ids is one argument for redis-py to pack rather than a thousand (it packs each in
    Python: docs/performance.md).  Each id goes through `escape` as a lone argument would (the
    same stored bytes), so the JSON is valid UTF-8."""
    return orjson.dumps([escape(i) if i[:1] == MARK or not i.isascii() else i for i in ids])


def json_reply(reply: bytes | str) -> list[Any]:
    """A script's JSON list answer (orjson: it runs for every claim and done batch), its strings
    unescaped."""
    return [unescape(x) if type(x) is str and x[:1] == MARK else x for x in loads(reply)]


def stored_body(value: bytes | str) -> Any:
    """A stored JSON body, written by row_json."""
    return read_row(value)


class Script:
    """A registered script whose string arguments go out through `escape` (codec.py), so any id,
    NUL and lone surrogates included, reaches Redis and Lua as valid UTF-8 and comes back exactly.
    Key names are built from escaped parts by the caller."""

    def __init__(self, store: ScriptHost, source: str) -> None:
        self._store = store
        self._script = store.client.register_script(source)

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        if not self._store.moved:
            await self._store.move_legacy_keys()
        # the batches' ids come as one argument (`id_list`): these are few, `escape` as it is
        args = [escape(a) if type(a) is str else a for a in args]
        return await self._script(keys=keys, args=args)


def millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
