"""Who may do what: API keys, their roles and model allowlists (the domain side of access)."""
