"""keyrouter: inbound-SMS keyword routing for iletiMerkezi.  The public names."""

from keyrouter.client import ApiError, AuthenticationRefused, PermanentApiError, TransientApiError
from keyrouter.context import Context
from keyrouter.message import Message
from keyrouter.retries import PermanentError, RetryLater
from keyrouter.router import Match, Route, Router
from keyrouter.rules import RulesError, load_rules

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
