"""keyrouter: inbound-SMS keyword routing for iletiMerkezi."""

from keyrouter.message import Message

__all__ = ["Message"]
__version__ = "0.1.0"
