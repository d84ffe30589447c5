"""Reading İYS's error answers: its error codes, its text, and which setting a refusal blames.

İYS answers errors as `{"errors": [{"code", "message"}]}` (some answers spell the key `code:`).
The codes keyrouter acts on are İYS's documented ones (docs/ordering-and-masking.md, "İYS's
answers"); a decision is never taken on a bare HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

__all__ = ["CODES_NOT_MATCHED", "NO_CONSENT_HELD", "NO_SERVICE_PROVIDER", "SAME_STATUS",
           "error_codes", "error_text", "misconfigured"]

#: İYS's documented error codes (its API document, "İYS API" 3.2.0; docs/ordering-and-masking.md).
NO_CONSENT_HELD = "H175"  # "İlk defa kaydedilen bir iznin durum (status) bilgisi RET olmamalıdır."
SAME_STATUS = "H174"  # "İzin durumu (status) güncellemesi için farklı bir durum girilmelidir."
CODES_NOT_MATCHED = "H353"  # "iysCode/brandCode, kullanıcı izinleriyle eşleştirilemiyor"
NO_SERVICE_PROVIDER = "H001"  # "Hizmet Sağlayıcı:{iysCode} bulunamadı."


def error_codes(answer: httpx.Response) -> list[str]:
    """The `code` of each entry of İYS's `errors` (İYS spells it `code:` in some answers)."""
    try:
        doc = answer.json()
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, Mapping) else None
    codes = []
    for err in errors if isinstance(errors, list) else []:
        if isinstance(err, Mapping):
            code = err.get("code", err.get("code:"))
            if isinstance(code, str):
                codes.append(code.strip())
    return codes


def misconfigured(answer: httpx.Response) -> str | None:
    """The setting a 403/404 answer blames, or None: IYS_BRAND_CODE when İYS names the brand,
    IYS_CODE when it names the service provider, and all three when a 404 has no İYS error
    body (the path is unknown there: a wrong base URL or codes)."""
    if answer.status_code not in (403, 404):
        return None
    text = error_text(answer).casefold()
    codes = error_codes(answer)
    if "brandcode" in text or "marka" in text:
        return "IYS_BRAND_CODE"
    if NO_SERVICE_PROVIDER in codes or "iyscode" in text or "hizmet sağlayıcı" in text:
        return "IYS_CODE"
    if answer.status_code == 404 and not codes:
        return "IYS_BASE_URL, IYS_CODE or IYS_BRAND_CODE"
    return None


def error_text(answer: httpx.Response) -> str:
    """İYS's error as one line: "CODE: message; ..." from `errors`, else a short body."""
    try:
        doc = answer.json()
    except ValueError:
        doc = None
    parts: list[str] = []
    if isinstance(doc, Mapping):
        errors = doc.get("errors")
        for err in errors if isinstance(errors, list) else []:
            if isinstance(err, Mapping):
                code, message = err.get("code"), err.get("message")
                parts.append(": ".join(str(x) for x in (code, message) if x))
        for key in ("message", "error_description", "error"):
            if not parts and isinstance(doc.get(key), str):
                parts.append(doc[key])
    text = "; ".join(p for p in parts if p) or answer.text.strip().replace("\n", " ")[:200]
    return text or "(no error text)"
