"""Messages -> handler effects, exactly once per namespace: the streaming dispatcher.

- `core`: Dispatcher (offer, run, process, what metrics read), where the parts are wired;
- `routing`: the current rules, their conversations and resolved handlers;
- `scheduling`: the local queue, per-sender order, priority;
- `claims`: the store's side of scheduling (unfinished, claimed);
- `loop`: slots and ticks, the winding down at a stop;
- `running`: one message's entries one after another, retries and dead letters;
- `entry_context`: the lazily built Context a handler receives;
- `ends`: what a message's ending does to its sender's line;
- `writes`: progress and done markers in batches;
- `limits`: time limits, abandoned threads;
- `outcomes`: Report and the shared vocabulary.
"""

from keyrouter.dispatch.core import Dispatcher
from keyrouter.dispatch.outcomes import (
                                         ADMITTED,
                                         DEFAULT_RULE,
                                         Report,
                                         describe_error,
                                         entry_key,
                                         is_permanent,
)

__all__ = ["ADMITTED", "DEFAULT_RULE", "Dispatcher", "Report", "describe_error", "entry_key",
           "is_permanent"]
