"""The apply path's set-based statements in each database's own SQL, rows as plain tuples.

SQLAlchemy Core builds and processes a parameter dictionary per row of an executemany; for the
thousands of rows of a batch that was a third of the apply path's CPU. The hot statements are
therefore written here as SQL text and handed to the driver (``exec_driver_sql``: SQLAlchemy
still wraps driver errors, so :mod:`listboss_common.faults` classifies them as before):

- **SQLite** runs in the process: an ``executemany`` of one statement with a tuple per row
  costs the database engine's work and little else.
- **PostgreSQL**: one statement for all the rows, each column sent as one array parameter
  and turned back into rows on the server by ``unnest``. One round trip, one parse and plan
  per batch instead of per row, and the server's per-statement overhead once.

Where two transactions may lock the same rows (two replicas applying concurrently), rows are
written in the order the caller gives, which is sorted by key; ``unnest`` yields an array's
elements in order, so an ``INSERT ... SELECT FROM unnest`` inserts (and locks) in that order.
Joins give no order, so an ``UPDATE ... FROM unnest`` is preceded by :func:`lock_rows`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from listboss_common.db import is_postgres

# Bound parameters per SQLite IN (...) list: far below its limit (32,766).
IN_CHUNK = 500

Row = Sequence[Any]


def _pg_type(table: sa.Table, column: str) -> str:
    return table.c[column].type.compile(dialect=postgresql.dialect())


def unnest(table: sa.Table, columns: Sequence[str], rows: Sequence[Row]) -> tuple[str, list[list]]:
    """``unnest(%b::T[], ...)`` for ``columns`` and its parameters: the rows' columns as lists.

    ``%b``: the arrays go in PostgreSQL's binary format. The driver builds the text format in
    Python, quoting each element through regular expressions: five times the CPU for text."""
    casts = ", ".join(f"%b::{_pg_type(table, column)}[]" for column in columns)
    return f"unnest({casts})", [list(values) for values in zip(*rows, strict=True)] if rows else [[] for _ in columns]


def chunks(items: Sequence, size: int = IN_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert(
    connection: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Row], on_conflict: str = ""
) -> None:
    """Inserts ``rows`` (tuples in ``columns`` order); ``on_conflict`` is the clause to add
    (``ON CONFLICT DO NOTHING``, or ``ON CONFLICT (...) DO UPDATE SET ...``)."""
    if not rows:
        return
    names = ", ".join(columns)
    if is_postgres(connection):
        source, parameters = unnest(table, columns, rows)
        connection.exec_driver_sql(
            f"INSERT INTO {table.name} ({names}) SELECT * FROM {source} {on_conflict}", tuple(parameters)
        )
    else:
        marks = ", ".join("?" for _ in columns)
        connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks}) {on_conflict}", list(rows))


def update(
    connection: Connection, table: sa.Table, keys: Sequence[str], columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """Sets ``columns`` of the rows whose ``keys`` match: each row is its key values, then its
    column values. A column given as ``"name+"`` adds the value to the stored one. On
    PostgreSQL the caller holds the rows' locks already (:func:`lock_rows`, or a SELECT ...
    FOR NO KEY UPDATE), taken in key order."""
    if not rows:
        return
    names = [column.rstrip("+") for column in columns]
    if is_postgres(connection):
        source, parameters = unnest(table, [*keys, *names], rows)
        assignments = ", ".join(
            f"{name} = {table.name}.{name} + v.{name}" if column.endswith("+") else f"{name} = v.{name}"
            for column, name in zip(columns, names, strict=True)
        )
        matches = " AND ".join(f"{table.name}.{key} = v.{key}" for key in keys)
        connection.exec_driver_sql(
            f"UPDATE {table.name} SET {assignments} FROM {source} AS v({', '.join([*keys, *names])}) WHERE {matches}",
            tuple(parameters),
        )
    else:
        assignments = ", ".join(
            f"{name} = {name} + ?" if column.endswith("+") else f"{name} = ?"
            for column, name in zip(columns, names, strict=True)
        )
        matches = " AND ".join(f"{key} = ?" for key in keys)
        width = len(keys)
        connection.exec_driver_sql(
            f"UPDATE {table.name} SET {assignments} WHERE {matches}",
            [(*row[width:], *row[:width]) for row in rows],
        )


def lock_rows(connection: Connection, table: sa.Table, ids: Sequence[int]) -> None:
    """On PostgreSQL locks the rows with these ids (``id`` column) in id order, so that two
    transactions updating overlapping rows wait for each other instead of deadlocking. SQLite
    has one writer at a time: nothing to do."""
    if ids and is_postgres(connection):
        connection.exec_driver_sql(
            f"SELECT id FROM {table.name} WHERE id = ANY(%b::bigint[]) ORDER BY id FOR NO KEY UPDATE", (sorted(ids),)
        ).close()


def delete_keys(connection: Connection, table: sa.Table, keys: Sequence[str], rows: Sequence[Row]) -> None:
    """Deletes the rows whose ``keys`` columns hold one of ``rows`` (tuples in ``keys`` order)."""
    if not rows:
        return
    matches = " AND ".join(f"{table.name}.{key} = d.{key}" for key in keys)
    if is_postgres(connection):
        source, parameters = unnest(table, keys, rows)
        connection.exec_driver_sql(
            f"DELETE FROM {table.name} USING {source} AS d({', '.join(keys)}) WHERE {matches}", tuple(parameters)
        )
        return
    condition = " AND ".join(f"{key} = ?" for key in keys)
    connection.exec_driver_sql(f"DELETE FROM {table.name} WHERE {condition}", list(rows))


def select_in(
    connection: Connection, query: str, fixed: Row, values: Sequence, array_type: str = "text"
) -> list[sa.Row]:
    """Rows of ``query``, whose ``{values}`` placeholder is matched against ``values``:
    ``{values}`` stands for ``= ANY(%b)`` with one array (binary, see :func:`unnest`) on PostgreSQL and for ``IN (?, ...)``
    in chunks on SQLite; ``fixed`` are the parameters before it (``%s`` / ``?`` each, written
    as ``{p}`` in ``query``)."""
    if not values:
        return []
    if is_postgres(connection):
        text = query.format(p="%s", values=f"= ANY(%b::{array_type}[])")
        return list(connection.exec_driver_sql(text, (*fixed, list(values))))
    found: list[sa.Row] = []
    for chunk in chunks(values):
        text = query.format(p="?", values=f"IN ({', '.join('?' for _ in chunk)})")
        found.extend(connection.exec_driver_sql(text, (*fixed, *chunk)))
    return found
