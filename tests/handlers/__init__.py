"""The built-in handlers, each against real local servers (the fake provider, a webhook receiver)."""
