"""The one settings surface: environment variables (SPEC, Environment), overridden by flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from keyrouter.durations import parse_duration
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
    model_config = ConfigDict(frozen=True)

    rules: str = "./rules"
    store: str = "sqlite:///keyrouter.sqlite3"
    namespace: str = "default"
    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None  # SecretStr: never printed by repr, str or logs
    api_hash: SecretStr | None = None
    sender: str | None = None  # approved sender name for replies
    # İYS, for the `iys` handler (README "İYS"); the password never shows in reprs or logs.
    iys_username: str | None = None
    iys_password: SecretStr | None = None
    iys_code: str | None = None  # the service provider's İYS code
    iys_brand_code: str | None = None
    iys_base_url: str = DEFAULT_IYS_BASE_URL  # sandbox: SANDBOX_IYS_BASE_URL
    # Extensions (README, "Configuration"):
    horizon: str | None = None  # e.g. "30d": older messages are ignored, done markers expire
    max_attempts: int = Field(5, ge=1)
    retry_base: float = Field(10.0, gt=0)  # seconds before the second attempt, doubling after
    retry_max: float = Field(900.0, gt=0)
    lease: float = Field(60.0, gt=0)  # seconds a claim lasts without renewal
    concurrency: int = Field(64, ge=1)  # handler calls at once
    #: KEYROUTER_HTTP_TIMEOUT: seconds the provider client waits for connect, send and answer; None
    #: keeps the client's defaults (read 20 s).  Lower it to notice a hung get-inbox sooner.
    http_timeout: float | None = Field(None, gt=0)
    #: KEYROUTER_HANDLER_TIMEOUT: seconds one handler entry may run, unless its rule or entry sets
    #: `timeout`; past it the entry fails (and is retried) and its slot goes to other messages.
    handler_timeout: float = Field(300.0, gt=0)
    #: KEYROUTER_SHUTDOWN_GRACE: seconds a graceful stop waits for running entries; then the
    #: worker exits 0 and leaves them to lease expiry (same idempotency key on the repeat).
    shutdown_grace: float = Field(30.0, ge=0)
    #: KEYROUTER_MAX_ABANDONED: sync handler threads left running past their time limit that a
    #: worker tolerates; one more and it stops cleanly (exit 5) for its supervisor to restart it.
    max_abandoned: int = Field(8, ge=0)
    #: KEYROUTER_DASHBOARD_TOKEN: signs people and scripts in to `keyrouter dashboard` and enables
    #: its Retry/Drop buttons; without it the dashboard is read-only and loopback-only.
    dashboard_token: SecretStr | None = None
    #: KEYROUTER_METRICS_ADDR: HOST:PORT for /metrics, /healthz, /readyz (`run --metrics` wins).
    metrics_addr: str | None = None
    #: KEYROUTER_LOG_LEVEL / KEYROUTER_LOG_FORMAT: read and checked by keyrouter.ops.logs at start-up.
    log_level: str = "INFO"
    log_format: str = "text"

    #: KEYROUTER_RULES_MAX_BYTES: what the rules files may hold in all; bounds the time and memory
    #: reading them takes (a 50 MB file took 42 s and 1 GB).
    rules_max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1)

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
    "rules_max_bytes": "KEYROUTER_RULES_MAX_BYTES",
    "metrics_addr": "KEYROUTER_METRICS_ADDR",
    "log_level": "KEYROUTER_LOG_LEVEL",
    "log_format": "KEYROUTER_LOG_FORMAT",
}
