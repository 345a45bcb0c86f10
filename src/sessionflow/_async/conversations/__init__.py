"""Conversation-list backends (the async source; `_sync` is generated)."""
