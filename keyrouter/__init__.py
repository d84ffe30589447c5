"""keyrouter: inbound-SMS keyword routing for iletiMerkezi.  The public names."""

from keyrouter.handlers.context import Context
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import (
    ApiError,
    AuthenticationRefused,
    PermanentApiError,
    TransientApiError,
)
from keyrouter.retries import PermanentError, RetryLater
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.rules.router import Match, Route, Router

__all__ = [
    "ApiError",
    "AuthenticationRefused",
    "Context",
    "Match",
    "Message",
    "PermanentApiError",
    "PermanentError",
    "RetryLater",
    "Route",
    "Router",
    "RulesError",
    "TransientApiError",
    "load_rules",
]
__version__ = "0.1.0"
