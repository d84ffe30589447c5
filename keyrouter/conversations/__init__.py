"""Conversations: surveys of several questions over SMS, declared under `conversations:` in a
rules file (docs/conversations.md).

- `model`: the YAML section, validated with file:line problems;
- `steps`: one message applied to a respondent's record (pure);
- `stores`: the per-respondent records on every backend (memory, SQLite, Redis);
- `engine`: where the dispatcher sends a message of a respondent with an open conversation, and
  the built-in handler entries that apply it and send its SMS exactly once;
- `results`, `checks`: `keyrouter survey results` and `keyrouter check`.
"""
