"""ListBoss ingest: accepts canonical events and platform webhooks, validates, normalizes and publishes them."""
