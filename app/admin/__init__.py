"""Admin pages: server-rendered HTML over the same services as the REST API, logged in with an API key."""
