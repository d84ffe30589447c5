"""`webhook`: POST the message as JSON to a URL, signed, with the idempotency key.

Params:
- `url` (required): `http://` or `https://`.  Redirects are not followed.
- `secret_env`: the NAME of an environment variable holding the signing secret.  When given, the
  variable must be set (else PermanentError naming the variable, never showing a value) and every
  request carries `X-Keyrouter-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`.
  Without `secret_env` requests are unsigned.
- `timeout` (default 10 seconds): seconds (a number) or a duration (`30s`); bounds the whole call.

The body (UTF-8 JSON):
    {"message": {"id", "received_at" (ISO 8601 with offset), "sender", "sender_e164", "receiver",
                 "text", "normalized"},
     "match": {"rule", "keyword", "captures", "fuzzy"} or null (no rule matched),
     "idempotency_key": "kr-..."}
Headers: `Content-Type: application/json`, `Idempotency-Key` (the same as in the body, stable
across retries of this message to this handler entry: receivers deduplicate on it; it is also
the replay protection, there is no timestamp header) and the signature.  Receivers verify with
`hmac.compare_digest(header, "sha256=" + hmac.new(secret, raw_body, sha256).hexdigest())` over
the raw bytes they received, before parsing.

Answers: 2xx is success.  Connection failures, timeouts, 408, 429 and 5xx raise RetryLater (the
dispatcher retries with backoff), carrying `retry_after` seconds when the answer has a
`Retry-After` header (seconds or an HTTP date).  3xx and every other 4xx raise PermanentError
with the status.  Error texts show the URL without its query or credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from keyrouter.durations import parse_duration
from keyrouter.handlers.context import Context
from keyrouter.handlers.templating import unknown_params
from keyrouter.message import Message
from keyrouter.retries import PermanentError, RetryLater, retry_after
from keyrouter.rules.router import Match

__all__ = [
    "DEFAULT_TIMEOUT",
    "PARAMS",
    "SIGNATURE_HEADER",
    "handle",
    "params_problem",
    "payload",
    "retry_after",
    "sign",
]

PARAMS = ("url", "secret_env", "timeout")
DEFAULT_TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Keyrouter-Signature"
RETRYABLE_STATUS = frozenset({408, 429})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def params_problem(params: Mapping[str, Any]) -> str | None:
    """Why these params cannot work for `webhook`, or None (for `keyrouter check` and run time).
    Does not look at the environment: the secret may be set only where the worker runs."""
    problem = unknown_params(params, PARAMS, "webhook")
    if problem:
        return problem
    url = params.get("url")
    if not isinstance(url, str) or not url.strip():
        return "webhook: the url param is required, e.g. webhook: {url: https://crm.example/sms}"
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "webhook: url is not a valid URL"
    if any(c.isspace() for c in url.strip()):
        return "webhook: url has a space in it (percent-encode it as %20)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook: url must start with http:// or https:// and name a host"
    secret_env = params.get("secret_env")
    if secret_env is not None and (not isinstance(secret_env, str) or not _ENV_NAME.fullmatch(secret_env)):
        return "webhook: secret_env must be the NAME of an environment variable, e.g. CRM_WEBHOOK_SECRET"
    try:
        _timeout(params)
    except ValueError as exc:
        return f"webhook: timeout: {exc}"
    return None


def _timeout(params: Mapping[str, Any]) -> float:
    value = params.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration like 30s")
    seconds = float(value) if isinstance(value, int | float) else parse_duration(value).total_seconds()
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be more than zero seconds")
    return seconds


def payload(message: Message, match: Match | None, idempotency_key: str) -> dict[str, Any]:
    """The JSON document the webhook receives."""
    return {
        "message": {
            "id": message.id,
            "received_at": message.received_at.isoformat(),
            "sender": message.sender,
            "sender_e164": message.sender_e164,
            "receiver": message.receiver,
            "text": message.text,
            "normalized": message.normalized,
        },
        "match": None
        if match is None
        else {
            "rule": match.rule,
            "keyword": match.keyword,
            "captures": dict(match.captures),
            "fuzzy": bool(match.fuzzy),
        },
        "idempotency_key": idempotency_key,
    }


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for `body`: `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _safe_url(url: str) -> str:
    """The URL for errors and logs: no credentials, no query, no fragment (they may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def handle(message: Message, match: Match | None, context: Context) -> None:
    params = context.params
    problem = params_problem(params)
    if problem:
        raise PermanentError(problem)
    url = params["url"].strip()
    shown = _safe_url(url)
    timeout = _timeout(params)
    body = json.dumps(
        payload(message, match, context.idempotency_key), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "keyrouter",
        "Idempotency-Key": context.idempotency_key,
    }
    secret_env = params.get("secret_env")
    if secret_env is not None:
        secret = os.environ.get(secret_env)
        if not secret:
            raise PermanentError(
                f"webhook: the environment variable {secret_env} (secret_env) is not set or "
                "empty: set it to the webhook's signing secret where the worker runs"
            )
        headers[SIGNATURE_HEADER] = sign(secret.encode("utf-8"), body)

    failure: Exception | None = None
    status = 0
    answer_headers: httpx.Headers | None = None
    try:
        with anyio.fail_after(timeout):
            async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False) as http:
                answer = await http.post(url, content=body, headers=headers)
                status, answer_headers = answer.status_code, answer.headers
    except httpx.InvalidURL:
        failure = PermanentError(f"webhook {shown}: the url is not usable (check the rules file)")
    except (TimeoutError, httpx.TimeoutException):
        failure = RetryLater(f"webhook {shown}: no answer within {timeout:g}s")
    except httpx.HTTPError as exc:
        failure = RetryLater(f"webhook {shown}: connection failed ({type(exc).__name__})")
    # Raised here, outside the except clauses, so the httpx error (which holds the request and
    # its headers) is neither the cause nor the context of what the dispatcher records.
    if failure is not None:
        raise failure

    if 200 <= status < 300:
        context.logger.info("webhook: message %s delivered to %s (HTTP %d)", message.id, shown, status)
        return
    if status in RETRYABLE_STATUS or 500 <= status < 600:
        delay = retry_after(answer_headers.get("Retry-After") if answer_headers else None)
        after = f", retry after {delay:g}s" if delay is not None else ""
        raise RetryLater(f"webhook {shown}: HTTP {status}{after}", retry_after=delay)
    if 300 <= status < 400:
        raise PermanentError(
            f"webhook {shown}: HTTP {status} redirect, not followed: set url to the final address"
        )
    raise PermanentError(f"webhook {shown}: HTTP {status}: the receiver refused the request")
