"""Which failures a worker waits out and which belong to the work: real errors from
real drivers and a real nats-server, not constructed ones."""

from __future__ import annotations

import nats
import pytest
import sqlalchemy as sa

from listboss_common import bus
from listboss_common.db import create_engine
from listboss_common.faults import dependency_of, is_transient
from listboss_testing import free_port


def error_of(engine: sa.Engine, *statements: str) -> BaseException:
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    except Exception as error:
        return error
    raise AssertionError(f"{statements} did not fail")


def test_an_unreachable_database_is_transient():
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    error = error_of(engine, "SELECT 1")
    assert is_transient(error) and dependency_of(error) == "database"


@pytest.mark.postgres
def test_postgresql_errors_of_the_work_and_of_the_infrastructure(postgres_url):
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (name text CHECK (name <> 'x'))")
            connection.exec_driver_sql("CREATE INDEX t_name ON t (name)")
        # Belong to the work, whatever class the driver gives them: dead-lettered after retries.
        nul = error_of(engine, "INSERT INTO t VALUES ('A' || chr(0))")  # 54: program limit
        assert isinstance(nul, sa.exc.OperationalError) and not is_transient(nul)
        huge = error_of(
            engine, "INSERT INTO t SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 500)"
        )  # 54: index row size
        assert not is_transient(huge)
        assert not is_transient(error_of(engine, "INSERT INTO t VALUES ('x')"))  # 23: check violation
        raised = error_of(engine, "DO $$ BEGIN RAISE EXCEPTION 'refused'; END $$")  # P0: a trigger's refusal
        assert isinstance(raised, sa.exc.ProgrammingError) and not is_transient(raised)
        # SQL that does not match the schema: waited out until an operator fixes it.
        missing = error_of(engine, "SELECT * FROM no_such_table")
        assert is_transient(missing) and dependency_of(missing) == "database"
        # A statement timeout (57) and a serialization failure (40) are passing.
        assert is_transient(error_of(engine, "SET LOCAL statement_timeout = '10ms'", "SELECT pg_sleep(1)"))
        serialization = error_of(engine, "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$")
        assert is_transient(serialization)
    finally:
        engine.dispose()


def test_sqlite_errors():
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert not is_transient(error_of(engine, "INSERT INTO t VALUES (1)"))  # unique constraint
        assert is_transient(error_of(engine, "SELECT * FROM no_such_table"))  # OperationalError
    finally:
        engine.dispose()


async def test_nats_errors(nats_server):
    nc = await bus.connect(nats_server.url, name="test-faults")
    try:
        js = nc.jetstream(timeout=0.5)
        # No stream listens on the subject: JetStream has no responder.
        try:
            await js.publish("nowhere.at.all", b"x")
        except Exception as error:
            assert is_transient(error) and dependency_of(error) == "nats"
        else:
            raise AssertionError("a publish with no stream succeeded")
    finally:
        await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError) as closed:
        await nc.publish("x", b"")
    assert is_transient(closed.value)


def test_errors_of_the_work_are_not_transient():
    assert not is_transient(ValueError("bad"))
    assert not is_transient(bus.PoisonMessage("undecodable"))
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = ConnectionRefusedError()
    assert is_transient(wrapped)
