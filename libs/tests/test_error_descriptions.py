"""Error texts that reach logs and dead-letter headers carry no row values: a database
error, on SQLite and PostgreSQL, is described (``describe_error``) and logged with its
traceback (``logs.format_exception``) without the statement's parameters or the
driver's DETAIL quoting the conflicting key."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy as sa

from listboss_common.db import create_engine
from listboss_common.faults import describe_error
from listboss_common.logs import format_exception

EMAIL = "quentina.vorlakova@example.com"


def duplicate_email_error(url: str) -> tuple[sa.exc.DBAPIError, tuple]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE people (email TEXT UNIQUE)")
            connection.execute(sa.text("INSERT INTO people VALUES (:email)"), {"email": EMAIL})
        try:
            with engine.begin() as connection:
                connection.execute(sa.text("INSERT INTO people VALUES (:email)"), {"email": EMAIL})
        except sa.exc.DBAPIError as error:
            return error, sys.exc_info()
        raise AssertionError("the duplicate was stored")
    finally:
        engine.dispose()


def test_a_database_error_is_described_without_the_rows_values(database_url: str):
    error, exc_info = duplicate_email_error(database_url)
    if database_url.startswith("postgresql"):
        assert EMAIL in str(error.orig)  # PostgreSQL's DETAIL quotes the key: what must not get out
    described = describe_error(error)
    assert described.startswith("IntegrityError(")
    assert "people" in described.lower()  # what failed is still told: the table or constraint
    assert EMAIL not in described
    logged = format_exception(exc_info)
    assert "Traceback (most recent call last)" in logged
    assert EMAIL not in logged


@pytest.mark.parametrize("error", [ValueError("bad"), TimeoutError()])
def test_other_errors_keep_their_repr(error: Exception):
    assert describe_error(error) == repr(error)
