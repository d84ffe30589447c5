"""The İYS configuration checked end to end, by `keyrouter doctor` and before `run` starts.

Two calls, both read-only: a token (IYS_USERNAME, IYS_PASSWORD, IYS_BASE_URL), then a consent
status query for a probe recipient under IYS_CODE and IYS_BRAND_CODE.  A refusal is a failure
naming the variable to fix (a mistyped brand code answers 404 on every brand path, which must
never let an opt-out count as handled: docs/ordering-and-masking.md, "İYS's answers").  An İYS
that does not answer (network, 5xx, 429) is a warning, not a configuration failure: the `iys`
handler retries it.  Nothing is recorded in İYS and no secret is printed.
"""

from __future__ import annotations

from keyrouter.ops.doctor_store import Check
from keyrouter.providers.iys import (
    Consent,
    IysClient,
    IysMisconfigured,
    IysRefused,
    IysUnavailable,
    configured,
)
from keyrouter.rules.router import Router
from keyrouter.settings import Settings

__all__ = ["PROBE_RECIPIENT", "check_iys", "uses_iys"]

#: The recipient of the status query: a well-formed mobile number; whether İYS holds a record
#: for it does not matter, only that the account, codes and path answer.
PROBE_RECIPIENT = "+905000000000"
NAME = "iys"


def uses_iys(router: Router | None) -> bool:
    """True when a rule (or the default) has an `iys` entry."""
    if router is None:
        return False
    return any(e.name == "iys" for e in router.rules.entries())


async def check_iys(settings: Settings, router: Router | None) -> Check:
    """ok, fail (naming the variable), warn (İYS unreachable) or skip (İYS not used)."""
    needed = uses_iys(router)
    if not configured(settings):
        if needed:
            return Check(NAME, "fail", "the rules use `iys` but İYS is not configured",
                         "set IYS_USERNAME, IYS_PASSWORD, IYS_CODE and IYS_BRAND_CODE (and "
                         "IYS_BASE_URL for the sandbox)")
        return Check(NAME, "skip", "not checked: no `iys` in the rules and no IYS_* settings")
    assert settings.iys_password is not None
    client = IysClient(str(settings.iys_username), settings.iys_password, str(settings.iys_code),
                       str(settings.iys_brand_code), settings.iys_base_url,
                       timeout=settings.http_timeout or 10.0, attempts=2, max_wait=2.0)
    where = f"İYS code {settings.iys_code}, brand {settings.iys_brand_code}"
    try:
        try:
            await client.token()
        except IysRefused as exc:
            return Check(NAME, "fail", str(exc),
                         "check IYS_USERNAME and IYS_PASSWORD, and IYS_BASE_URL (live or sandbox)")
        try:
            await client.consent_status(Consent(PROBE_RECIPIENT, "RET", ""))
        except IysMisconfigured as exc:
            return Check(NAME, "fail", f"{where}: {exc}", f"fix {exc.variable}")
        except IysRefused as exc:
            return Check(NAME, "fail", f"{where}: {exc}",
                         "check IYS_CODE, IYS_BRAND_CODE and the API user's permissions")
    except IysUnavailable as exc:
        return Check(NAME, "warn", f"İYS did not answer ({exc}); the `iys` handler retries it",
                     "check the network path to IYS_BASE_URL")
    finally:
        await client.aclose()
    return Check(NAME, "ok", f"token and a consent status query answered ({where})")
