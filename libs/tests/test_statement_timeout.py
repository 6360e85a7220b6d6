"""Statement timeouts: the setting, how an RPC's deadline bounds them, and what PostgreSQL does
with them (real servers; tests marked ``postgres`` need one)."""

from __future__ import annotations

import contextvars

import pytest
import sqlalchemy as sa

from listboss_common import deadlines
from listboss_common.config import ConfigError
from listboss_common.db import (
    DEFAULT_STATEMENT_TIMEOUT,
    STATEMENT_TIMEOUT_ENV,
    WORKER_STATEMENT_SECONDS,
    WORKER_STATEMENT_TIMEOUT,
    StatementTimeout,
    create_engine,
    rpc_statement_timeout,
    statement_timeout_from_env,
)
from listboss_common.faults import is_query_canceled, is_transient


@pytest.mark.parametrize(("raw", "seconds"), [("", DEFAULT_STATEMENT_TIMEOUT), ("2.5", 2.5), ("10s", 10.0)])
def test_the_setting_is_seconds_with_a_default(monkeypatch, raw, seconds):
    monkeypatch.setenv(STATEMENT_TIMEOUT_ENV, raw)
    assert statement_timeout_from_env() == seconds


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "100000"])
def test_a_bad_setting_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv(STATEMENT_TIMEOUT_ENV, raw)
    with pytest.raises(ConfigError, match=STATEMENT_TIMEOUT_ENV):
        statement_timeout_from_env()


def in_rpc(time_remaining: float | None, timeout: StatementTimeout) -> float:
    """``timeout``'s seconds as seen inside an RPC with ``time_remaining`` seconds left."""

    def run() -> float:
        deadlines.start_call(time_remaining)
        return timeout.seconds()

    return contextvars.copy_context().run(run)


def test_an_rpc_statement_ends_by_the_callers_deadline_capped_by_the_maximum():
    timeout = rpc_statement_timeout(30.0)
    assert 1.9 < in_rpc(2.0, timeout) <= 2.0
    assert in_rpc(120.0, timeout) == 30.0
    assert in_rpc(None, timeout) == 30.0  # no deadline: the maximum
    assert timeout.seconds() == 30.0  # outside any RPC


def test_a_bus_worker_keeps_its_own_timeout_whatever_an_rpc_asked():
    assert in_rpc(0.5, WORKER_STATEMENT_TIMEOUT) == WORKER_STATEMENT_SECONDS


def test_sqlite_has_no_statement_timeout_and_is_left_alone(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with engine.connect() as connection:
        StatementTimeout(0.001).apply(connection)
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()


@pytest.fixture
def postgres(postgres_url):
    engine = create_engine(postgres_url, application_name="listboss-statement-tests")
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_the_timeout_lasts_as_long_as_the_transaction(postgres):
    with postgres.connect() as connection:
        default = connection.exec_driver_sql("SHOW statement_timeout").scalar()
        StatementTimeout(1.5).apply(connection)
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
        connection.rollback()
        # The pooled connection's next user does not inherit it.
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == default


@pytest.mark.postgres
def test_a_statement_past_its_timeout_is_query_canceled_which_a_worker_waits_out(postgres):
    with postgres.connect() as connection:
        StatementTimeout(0.05).apply(connection)
        with pytest.raises(sa.exc.OperationalError) as caught:
            connection.exec_driver_sql("SELECT pg_sleep(5)")
        connection.rollback()
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1  # the connection goes on
    assert is_query_canceled(caught.value)
    assert is_transient(caught.value)


@pytest.mark.postgres
def test_other_database_errors_are_not_query_canceled(postgres):
    with postgres.connect() as connection, pytest.raises(sa.exc.DBAPIError) as caught:
        connection.exec_driver_sql("SELECT 1 / 0")
    assert not is_query_canceled(caught.value)


@pytest.mark.postgres
def test_connections_carry_the_application_name(postgres):
    with postgres.connect() as connection:
        name = connection.exec_driver_sql(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).scalar()
    assert name == "listboss-statement-tests"
