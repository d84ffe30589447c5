"""The one settings surface: environment variables (SPEC, Environment), overridden by flags."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

DEFAULT_BASE_URL = "https://api.iletimerkezi.com"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    rules: str = "./rules"
    store: str = "sqlite:///keyrouter.sqlite3"
    namespace: str = "default"
    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None  # SecretStr: never printed by repr, str or logs
    api_hash: SecretStr | None = None
    sender: str | None = None  # approved sender name for replies

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field, var in _ENV.items():
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


_ENV = {
    "rules": "KEYROUTER_RULES",
    "store": "KEYROUTER_STORE",
    "namespace": "KEYROUTER_NAMESPACE",
    "base_url": "ILETIMERKEZI_BASE_URL",
    "api_key": "ILETIMERKEZI_API_KEY",
    "api_hash": "ILETIMERKEZI_API_HASH",
    "sender": "ILETIMERKEZI_SENDER",
}
