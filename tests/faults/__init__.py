"""Fault injection: the whole suite under load while a part of it fails, then checks that
every accepted event was applied exactly once and the tags are what they would have been
without the fault (docs/operations.md, "Failures and recovery")."""
