"""Fixtures for the contacts service's tests."""

from __future__ import annotations

import pytest

from listboss_common.db import create_engine
from listboss_contacts import schema


@pytest.fixture
def engine(database_url):
    """The contacts schema, migrated, on SQLite and on PostgreSQL (``database_url``)."""
    engine = create_engine(database_url)
    schema.migrate_database(engine)
    yield engine
    engine.dispose()
