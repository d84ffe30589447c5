"""Hooks called at the moments an operator counts: a message's outcome, a handler call, a poll.

The base class does nothing, so the dispatcher and worker call it unconditionally and pay only a
method call; `keyrouter.ops.metrics` subclasses it to feed Prometheus metrics.  Hooks must never
raise or block: they run on the event loop, on the hot path.
"""

from __future__ import annotations

#: Outcomes of one message (not of one attempt): the label values of keyrouter_messages_total.
OUTCOMES = ("done", "skipped", "retrying", "dead")
#: Results of one get-inbox poll: the label values of keyrouter_polls_total.
POLL_RESULTS = ("ok", "auth", "transient", "store")
#: Results of a rules reload: the label values of keyrouter_rules_reloads_total.
RELOAD_RESULTS = ("ok", "rejected")
#: Results of a blacklist reconciliation: the label values of keyrouter_reconcile_runs_total.
RECONCILE_RESULTS = ("agree", "reported", "failed")


class Events:
    """No-op hooks; subclass and override what you count."""

    def message_finished(self, rule: str, outcome: str) -> None:
        """A message left the dispatcher's hands this time: `outcome` is one of OUTCOMES."""

    def handler_finished(self, handler: str, seconds: float, ok: bool) -> None:
        """One handler entry call returned (ok) or raised / timed out (not ok)."""

    def handler_abandoned(self, handler: str) -> None:
        """A sync handler's thread passed its time limit and was left running."""

    def poll_finished(self, result: str, rows: int | None = None, total_rows: int | None = None) -> None:
        """One get-inbox poll: `result` is one of POLL_RESULTS; rows returned and the provider's
        totalRows when the poll succeeded."""

    def lease_taken_over(self, count: int = 1) -> None:
        """Claims of `count` messages whose previous owner's lease had expired."""

    def optout_applied(self, received_at: float, handled_at: float) -> None:
        """A blacklist effect took hold (epoch seconds): received-to-blacklisted delay."""

    def optional_failed(self, rule: str, handler: str, gave_up: bool) -> None:
        """An optional entry failed and its rule went on (docs/opt-out-duty.md); `gave_up`: for
        good (permanent, or its last attempt), else it is retried after the rest of the rule."""

    def stale_claim(self, handler: str) -> None:
        """An entry found its worker no longer holds the message's claim and made no provider
        call (fencing, docs/opt-out-duty.md)."""

    def loop_ticked(self, now: float) -> None:
        """The worker's main loop is alive (for /healthz)."""

    def duplicate_id(self) -> None:
        """A row came with an id already seen and different content: it was not dispatched."""

    def rules_reloaded(self, result: str, version: str | None = None) -> None:
        """A reload attempt (SIGHUP, --watch): `result` is one of RELOAD_RESULTS; `version` is
        the hash of the rules now in force."""

    def reconcile_finished(self, result: str, drift: dict[str, int], at: float) -> None:
        """A blacklist reconciliation ended (docs/reconciliation.md): `result` is one of
        RECONCILE_RESULTS, `drift` counts per kind, `at` its start (epoch seconds)."""


NO_EVENTS = Events()
