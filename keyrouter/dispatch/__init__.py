"""Messages -> handler effects, exactly once per namespace: the streaming dispatcher.

- `core`: Dispatcher (offer, run, process, what metrics read);
- `scheduling`: the local queue, per-sender order, priority;
- `running`: one message's entries one after another, retries and dead letters;
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
