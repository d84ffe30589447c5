"""The one settings surface: environment variables, overridden by flags (docs/reference/settings.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from keyrouter.durations import interval_seconds, parse_duration
from keyrouter.retries import RetryPolicy

#: The provider's API; a test or the sandbox points `base_url` at a local fake.
DEFAULT_BASE_URL = "https://api.iletimerkezi.com"
#: İYS's production API, and its sandbox (for `IYS_BASE_URL`).
DEFAULT_IYS_BASE_URL = "https://api.iys.org.tr"
SANDBOX_IYS_BASE_URL = "https://api.sandbox.iys.org.tr"
#: Rules files together may hold this many bytes (KEYROUTER_RULES_MAX_BYTES): 10,000 rules take
#: about 0.7 MB; the limit bounds the time and memory parsing can take.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class Settings(BaseModel):
    """Every setting, with its meaning: docs/reference/settings.md is generated from these fields
    and their descriptions (with the environment variable of each, `_ENV` below)."""

    model_config = ConfigDict(frozen=True)

    rules: str = Field("./rules", description="rules file or folder")
    store: str = Field("sqlite:///keyrouter.sqlite3", description=(
        "`redis://`, `rediss://`, `redis+cluster://` (Redis Cluster, any node), `sqlite:///relative`, "
        "`sqlite:////absolute`, `memory://`"))
    namespace: str = Field("default", description=(
        "key namespace in the store (`[A-Za-z0-9_.-]`): one per iletiMerkezi account sharing a store"))
    base_url: str = Field(DEFAULT_BASE_URL, description="the iletiMerkezi API's base address")
    # SecretStr: never printed by repr, str or logs
    api_key: SecretStr | None = Field(None, description=(
        "API key from the panel (Settings → Security → API Access); required for `run`; never "
        "printed or logged"))
    api_hash: SecretStr | None = Field(None, description=(
        "API hash from the panel; required for `run`; never printed or logged"))
    sender: str | None = Field(None, description="approved sender name for the `reply` handler")
    iys_username: str | None = Field(None, description=(
        "İYS API user for the `iys` handler (without it, `iys` entries end in the dead letters)"))
    iys_password: SecretStr | None = Field(None, description=(
        "İYS API password; never printed or logged"))
    iys_code: str | None = Field(None, description="the service provider's İYS code")
    iys_brand_code: str | None = Field(None, description="the brand's İYS code")
    iys_base_url: str = Field(DEFAULT_IYS_BASE_URL, description=(
        "İYS's base address; the sandbox is `https://api.sandbox.iys.org.tr`"))
    horizon: str | None = Field(None, description=(
        "a duration such as `30d`: older messages are ignored before they reach the store and done "
        "markers expire after it; unset keeps all"))
    max_attempts: int = Field(5, ge=1, description=(
        "attempts of a failing message before it goes to the dead letters"))
    retry_base: float = Field(10.0, gt=0, description=(
        "seconds before the second attempt, doubling after (with jitter)"))
    retry_max: float = Field(900.0, gt=0, description="longest wait between two attempts, seconds")
    lease: float = Field(60.0, gt=0, description=(
        "seconds a claim on a message lasts without renewal; also sizes the fetch lease"))
    concurrency: int = Field(64, ge=1, description="handler entries running at once in one worker")
    http_timeout: float | None = Field(None, gt=0, description=(
        "seconds for each connect and read of a provider call; unset keeps the client's "
        "(connect 5, read 20). Lower it to notice a hung get-inbox sooner"))
    handler_timeout: float = Field(300.0, gt=0, description=(
        "seconds one handler entry may run unless its rule or entry sets `timeout`; past it the "
        "entry fails (and is retried) and its slot goes to other messages"))
    shutdown_grace: float = Field(30.0, ge=0, description=(
        "seconds a graceful stop (first SIGTERM) waits for running entries before exiting 0; what "
        "is cut off runs again later with the same idempotency key"))
    max_abandoned: int = Field(8, ge=0, description=(
        "plain `def` handler threads stuck past their time limit that a worker tolerates; one more "
        "and it stops (exit 5) for its supervisor to restart it"))
    dashboard_token: SecretStr | None = Field(None, description=(
        "signs people and scripts in to `keyrouter dashboard` and enables Retry/Drop and full "
        "numbers in its CSV; required to listen beyond loopback; never logged. Unset: read-only, "
        "loopback only"))
    dashboard_trusted_proxies: str | None = Field(None, description=(
        "comma-separated addresses or networks of reverse proxies in front of the dashboard; only "
        "from them are `X-Forwarded-For`/`-Proto` believed (the sign-in limiter then keys on the "
        "client they name)"))
    dashboard_secure_cookie: str = Field("auto", description=(
        "the session cookie's `Secure` flag: `auto` (when the request is https, as a trusted proxy "
        "says), `always` or `never`"))
    metrics_addr: str | None = Field(None, description=(
        "`HOST:PORT` for `/metrics`, `/healthz`, `/readyz` (`run --metrics` wins); unset: no "
        "listener"))
    log_level: str = Field("INFO", description=(
        "`DEBUG`, `INFO`, `WARNING` or `ERROR` (anything else: exit 2); read by keyrouter.ops.logs"))
    log_format: str = Field("text", description="`text`, or `json` (one object a line)")
    rules_max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, description=(
        "bytes all rules files may hold together; past it every command that reads rules (and a "
        "reload) refuses them, `check` with exit 2. Bounds the time and memory reading them takes"))
    rules_cache: str = Field("auto", description=(
        "folder for the compiled-rules cache, which lets a start or reload of unchanged rules "
        "skip parsing them: `auto` (`$XDG_CACHE_HOME/keyrouter`, else `~/.cache/keyrouter`), a "
        "path, or `off`. Keyed by the files' bytes and keyrouter's version; the folder must be "
        "the worker user's alone (entries are written 0600)"))
    reconcile_interval: str = Field("1h", description=(
        "how often the fetching worker reconciles the provider's blacklist with the ledger "
        "(docs/reconciliation.md): seconds or a duration (`1h`, `30m`)"))
    reconcile_iys_source: str = Field("HS_WEB", description=(
        "İYS source recorded for opt-outs found only on the provider's blacklist (a link click, "
        "the panel)"))

    @field_validator("reconcile_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        interval_seconds(value)
        return value

    def reconcile_seconds(self) -> float:
        """KEYROUTER_RECONCILE_INTERVAL in seconds."""
        return interval_seconds(self.reconcile_interval)

    def rules_cache_dir(self) -> Path | None:
        """KEYROUTER_RULES_CACHE as a folder, None when `off`."""
        return cache_folder(self.rules_cache)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, base_delay=self.retry_base,
                           max_delay=self.retry_max)

    def horizon_delta(self) -> timedelta | None:
        return parse_duration(self.horizon) if self.horizon else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field, var in _ENV.items():
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def rules_max_bytes(env: Mapping[str, str] | None = None) -> int:
    """KEYROUTER_RULES_MAX_BYTES alone, for code that reads rules without Settings (reload,
    doctor, dashboard).  An invalid value gives the default here; Settings reports it."""
    env = os.environ if env is None else env
    raw = env.get(_ENV["rules_max_bytes"])
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        return Settings.model_validate({"rules_max_bytes": raw}).rules_max_bytes
    except ValidationError:
        return DEFAULT_MAX_BYTES


def cache_folder(value: str, env: Mapping[str, str] | None = None) -> Path | None:
    """`auto` -> the user's cache folder + keyrouter; `off` (or `none`, `0`) -> None."""
    env = os.environ if env is None else env
    if value.strip().lower() in ("off", "none", "0", "false", "no"):
        return None
    if value.strip().lower() in ("auto", ""):
        base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "keyrouter"
    return Path(value)


def rules_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """KEYROUTER_RULES_CACHE alone, for the reloader (which has no Settings)."""
    env = os.environ if env is None else env
    return cache_folder(env.get(_ENV["rules_cache"]) or "auto", env)


_ENV = {
    "rules": "KEYROUTER_RULES",
    "store": "KEYROUTER_STORE",
    "namespace": "KEYROUTER_NAMESPACE",
    "base_url": "ILETIMERKEZI_BASE_URL",
    "api_key": "ILETIMERKEZI_API_KEY",
    "api_hash": "ILETIMERKEZI_API_HASH",
    "sender": "ILETIMERKEZI_SENDER",
    "iys_username": "IYS_USERNAME",
    "iys_password": "IYS_PASSWORD",
    "iys_code": "IYS_CODE",
    "iys_brand_code": "IYS_BRAND_CODE",
    "iys_base_url": "IYS_BASE_URL",
    "horizon": "KEYROUTER_HORIZON",
    "max_attempts": "KEYROUTER_MAX_ATTEMPTS",
    "retry_base": "KEYROUTER_RETRY_BASE",
    "retry_max": "KEYROUTER_RETRY_MAX",
    "lease": "KEYROUTER_LEASE",
    "concurrency": "KEYROUTER_CONCURRENCY",
    "http_timeout": "KEYROUTER_HTTP_TIMEOUT",
    "handler_timeout": "KEYROUTER_HANDLER_TIMEOUT",
    "shutdown_grace": "KEYROUTER_SHUTDOWN_GRACE",
    "max_abandoned": "KEYROUTER_MAX_ABANDONED",
    "dashboard_token": "KEYROUTER_DASHBOARD_TOKEN",
    "dashboard_trusted_proxies": "KEYROUTER_DASHBOARD_TRUSTED_PROXIES",
    "dashboard_secure_cookie": "KEYROUTER_DASHBOARD_SECURE_COOKIE",
    "rules_max_bytes": "KEYROUTER_RULES_MAX_BYTES",
    "rules_cache": "KEYROUTER_RULES_CACHE",
    "metrics_addr": "KEYROUTER_METRICS_ADDR",
    "log_level": "KEYROUTER_LOG_LEVEL",
    "log_format": "KEYROUTER_LOG_FORMAT",
    "reconcile_interval": "KEYROUTER_RECONCILE_INTERVAL",
    "reconcile_iys_source": "KEYROUTER_RECONCILE_IYS_SOURCE",
}
