"""Fixtures for the contacts service's tests."""

from __future__ import annotations

import pytest

from listboss_contacts import schema


@pytest.fixture
def engine(migrated_engine):
    """The contacts schema, migrated, on SQLite and on PostgreSQL (``database_url``)."""
    return migrated_engine(schema.migrate_database)
