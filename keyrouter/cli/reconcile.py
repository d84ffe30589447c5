"""`keyrouter optouts reconcile [--dry-run] [--full] [--incremental]`: the provider's blacklist
against the ledger, now (docs/reconciliation.md).

Exit 0 when the ledger and the provider agree at the end (after the repairs), 1 when something is
left only reported (an opt-in the provider did not honour, a repair or a provider opt-out that did
not finish, the provider unavailable), 2 for bad settings (credentials, rules, İYS), 4 when the
store is unreachable.  The provider opt-outs found run through this command's own dispatcher
(what does not finish is run again by the next worker poll or reconcile).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from keyrouter.cli.common import EXIT_BAD_INPUT, CliError, load_router
from keyrouter.compliance.reconcile import Outcome, Plan, Reconciler, iys_params_of
from keyrouter.masking import mask_number
from keyrouter.providers.blacklist import filter_date
from keyrouter.providers.iletimerkezi import ApiError, AuthenticationRefused
from keyrouter.providers.iys import SOURCES, shared_client
from keyrouter.settings import Settings
from keyrouter.worker.runtime import make_client, open_runtime

__all__ = [
    "EXIT_AGREE",
    "EXIT_REPORTED",
    "cmd_reconcile",
    "outcome_lines",
    "plan_lines",
    "reconciler_for",
]

EXIT_AGREE, EXIT_REPORTED = 0, 1


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--dry-run", action="store_true", help="print what it would do; change nothing")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--incremental", action="store_true",
                      help="only numbers added since the last pass (date filter); default: a full "
                      "pass, the only one that finds numbers missing at the provider")


def reconciler_for(settings: Settings, router: Any, store: Any, client: Any) -> Reconciler:
    """The reconciler these settings describe; CliError (exit 2) for settings that cannot work."""
    source = settings.reconcile_iys_source.strip()
    if source not in SOURCES:
        raise CliError(f"invalid setting: KEYROUTER_RECONCILE_IYS_SOURCE={source!r}: use one of "
                       f"{', '.join(SOURCES)}")
    iys = iys_params_of(router.rules, source)
    if iys is not None and shared_client(settings) is None:
        raise CliError("the rules register opt-outs in İYS, so opt-outs found on the blacklist "
                       "are registered too: set IYS_USERNAME, IYS_PASSWORD, IYS_CODE and "
                       "IYS_BRAND_CODE (and IYS_BASE_URL for the sandbox)")
    return Reconciler(store, client, router=router, iys=iys)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    client = make_client(settings)
    if client is None:
        raise CliError("reconcile reads the provider's blacklist: set ILETIMERKEZI_API_KEY and "
                       "ILETIMERKEZI_API_HASH", EXIT_BAD_INPUT)
    router = load_router(args, settings)

    async def main() -> int:
        async with open_runtime(settings, router=router, client=client) as runtime:
            reconciler = reconciler_for(settings, router, runtime.store, client)
            full = not args.incremental
            if not full and (await runtime.store.reconcile_state() or {}).get("watermark") is None:
                print("no pass yet: a full pass instead of an incremental one")
                full = True
            try:
                if args.dry_run:
                    plan = await reconciler.plan(full=full)
                    print("\n".join(plan_lines(plan, dry_run=True)))
                    return EXIT_REPORTED if plan.reported or plan.readd or plan.record else EXIT_AGREE
                outcome = await reconciler.run(runtime.dispatcher.process, full=full)
            except AuthenticationRefused as exc:
                raise CliError(str(exc), EXIT_BAD_INPUT) from None
            except ApiError as exc:
                print(f"keyrouter: the provider's blacklist could not be read ({exc}); nothing "
                      "changed")
                return EXIT_REPORTED
            print("\n".join(outcome_lines(outcome)))
            return EXIT_AGREE if outcome.result == "agree" else EXIT_REPORTED

    try:
        return asyncio.run(main())
    except ValueError as exc:  # the store URL
        raise CliError(str(exc)) from None


def _masked(numbers: list[str], limit: int = 5) -> str:
    shown = ", ".join(mask_number(n) for n in numbers[:limit])
    return shown + (f" ... and {len(numbers) - limit} more" if len(numbers) > limit else "")


def plan_lines(plan: Plan, *, dry_run: bool = False) -> list[str]:
    """What a pass found, in words (numbers masked)."""
    would = "would be " if dry_run else ""
    if plan.window is not None:
        what = (f"incremental pass, numbers added {filter_date(plan.window[0])} to "
                f"{filter_date(plan.window[1])} (Turkey time)")
    else:
        what = "full pass"
    lines = [f"reconcile: {what}: {plan.listed} numbers on the provider's blacklist, "
             f"{plan.pages} page(s), {plan.calls} call(s)"]
    if plan.record:
        dated = ("dated by this run (a full pass cannot know when a number was added)"
                 if plan.mode == "full" else "dated by the start of the window they appeared in")
        lines.append(f"  {len(plan.record)} opt-out(s) only on the provider's blacklist {would}"
                     f"recorded, channel provider, {dated}: "
                     f"{_masked([number for _, _, number, _ in plan.record])}")
    if plan.readd:
        lines.append(f"  drift: {len(plan.readd)} number(s) blacklisted in the ledger but missing "
                     f"at the provider {would}added again: {_masked(plan.readd)}")
    if plan.reported:
        lines.append(f"  drift: {len(plan.reported)} number(s) on the blacklist although the "
                     f"ledger's latest action is an opt-in, left unchanged: {_masked(plan.reported)}")
    if plan.busy:
        lines.append(f"  {len(plan.busy)} number(s) left to their opt-out or opt-in in progress: "
                     f"{_masked(plan.busy)}")
    return lines


def outcome_lines(outcome: Outcome) -> list[str]:
    lines = plan_lines(outcome.plan)
    if outcome.repair_failed:
        lines.append(f"  adding again failed for {len(outcome.repair_failed)}: "
                     f"{_masked(outcome.repair_failed)}")
    if outcome.offered:
        lines.append(f"  {outcome.offered} provider opt-out(s) run, {len(outcome.left)} not "
                     "finished (retried by the next worker poll or reconcile)")
    agree = outcome.result == "agree"
    lines.append("result: the ledger and the provider agree" if agree else
                 "result: something is left only reported (see above)")
    return lines
