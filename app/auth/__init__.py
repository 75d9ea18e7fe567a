"""Labs, users, API keys, roles and the audit log."""
