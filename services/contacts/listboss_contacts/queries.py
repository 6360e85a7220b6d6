"""Reads for Send: contacts by filter (list, count, export), one contact, tags with
counts, a product's history and dashboard.

Contact filters compile to SQL over the contacts table with correlated
``EXISTS`` terms for tags and products. Pages are keyset positions on (order
column, id). When the default order (by id) meets a filter whose top level
requires one tag (or one product), the query is driven by that tag's index
``contact_tags (tag_id, present, contact_id)`` (or ``contact_products (producer,
product, contact_id)``), which is already in id order: the first page of
``tag = A AND NOT tag = B`` reads A's index from the page position and probes
B by primary key, so its cost does not grow with the number of contacts.

Purchase traits (``purchases``, ``spent.BRL``, ``last_purchase_time``, and each of them
for one product: ``purchases.4774438``) compile to terms over ``contact_traits`` and
``contact_spending``. A contact without purchases has 0 purchases and 0 spent, and no
purchase time; so ``purchases < 2`` matches it and ``last_purchase_time < X`` does not. A
required trait term that a contact without purchases cannot satisfy (``purchases >= 2``)
drives the query from its table's index (producer, product, contact id), which holds only
buyers and is in id order, like a tag. Contact data (``country``, ``phone``,
``attributes.<key>``) compiles to the contacts row; ``country = "PT"`` reads the index
(producer, country_code, id). Relative times (``now - 30d``) are measured from the
filter's ``now``: the clock when it is compiled, or the instant a caller gives.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.events.v1 import event_pb2
from listboss_common import filtering
from listboss_common.db import now as clock
from listboss_common.db import to_micros
from listboss_common.errors import invalid_field
from listboss_common.filtering import FieldSpec
from listboss_common.paging import SortOrder
from listboss_contacts.schema import (
    contact_products,
    contact_spending,
    contact_tags,
    contact_traits,
    contacts,
    history,
    product_daily,
    tags,
)

_EQUALITY = frozenset({"=", "!="})
_COMPARISON = frozenset({"=", "!=", "<", "<=", ">", ">="})
_TIMES = ("create_time", "update_time", "first_event_time", "last_event_time")
_PURCHASE_TIMES = ("first_purchase_time", "last_purchase_time")

# The fields a contact filter may name (AIP-160). docs/api.md documents them.
CONTACT_FILTER_FIELDS: dict[str, FieldSpec] = {
    "tag": FieldSpec("tag", _EQUALITY, "string"),
    "product": FieldSpec("product", _EQUALITY, "string"),
    "email": FieldSpec("email", _EQUALITY | {":"}, "string"),
    "source": FieldSpec("source", _EQUALITY, "enum", frozenset({"AUTO"})),
    **{name: FieldSpec(name, _COMPARISON, "timestamp") for name in _TIMES},
    # Contact data: ``field:*`` asks whether it has a value, ``field:"x"`` whether it contains x.
    "country": FieldSpec("country", _EQUALITY | {":"}, "string"),
    "phone": FieldSpec("phone", _EQUALITY | {":"}, "string"),
    "attributes.*": FieldSpec("attributes.*", _EQUALITY | {":"}, "string"),
    # Purchase traits; ``<trait>.<product id>`` for one product, ``spent.<currency>[.<product id>]``.
    "purchases": FieldSpec("purchases", _COMPARISON, "number"),
    "purchases.*": FieldSpec("purchases.*", _COMPARISON, "number"),
    "spent.*": FieldSpec("spent.*", _COMPARISON, "number"),
    **{name: FieldSpec(name, _COMPARISON, "timestamp") for name in _PURCHASE_TIMES},
    **{f"{name}.*": FieldSpec(f"{name}.*", _COMPARISON, "timestamp") for name in _PURCHASE_TIMES},
}
_TRAIT_FIELDS = frozenset({"purchases", "spent", *_PURCHASE_TIMES})

# order_by names -> the contacts column the keyset uses ("name" is the id order).
CONTACT_ORDERS = {"name": "id", "create_time": "create_time", "email": "email"}
DEFAULT_ORDER = SortOrder("name", False)

_EVENT_TYPES = {
    name.removeprefix("EVENT_TYPE_"): number
    for name, number in event_pb2.EventType.items()
    if number != event_pb2.EVENT_TYPE_UNSPECIFIED
}
_EVENT_TYPES.update({f"EVENT_TYPE_{name}": number for name, number in list(_EVENT_TYPES.items())})

HISTORY_FILTER_FIELDS: dict[str, FieldSpec] = {
    "type": FieldSpec("type", _EQUALITY, "enum", frozenset(_EVENT_TYPES)),
    "email": FieldSpec("email", _EQUALITY | {":"}, "string"),
    "contact": FieldSpec("contact", _EQUALITY, "string"),
    "occur_time": FieldSpec("occur_time", _COMPARISON, "timestamp"),
    "record_time": FieldSpec("record_time", _COMPARISON, "timestamp"),
}


def _parse(text: str, fields: dict[str, FieldSpec]) -> filtering.Node | None:
    try:
        return filtering.validate(filtering.parse(text), fields)
    except filtering.FilterError as error:
        raise invalid_field("filter", str(error)) from None


def parse_contact_filter(text: str) -> filtering.Node | None:
    return _parse(text, CONTACT_FILTER_FIELDS)


def parse_history_filter(text: str) -> filtering.Node | None:
    return _parse(text, HISTORY_FILTER_FIELDS)


def _split_tag_id(tag_id: str) -> tuple[str, str]:
    """ "{product}.{key}" -> (product, key). Keys hold no dots; product ids may."""
    product, _, key = tag_id.rpartition(".")
    return product, key


def tag_id(product: str, key: str) -> str:
    return f"{product}.{key}"


@dataclass(frozen=True)
class NamedTag:
    id: int
    contact_count: int


def tags_named(connection: Connection, producer: str, value: str) -> list[NamedTag]:
    """The producer's tags a filter value names: a key (every product's tag with
    that key) or a resource name producers/{producer}/tags/{product}.{key}."""
    return tags_named_all(connection, producer, [value])[value]


def tags_named_all(connection: Connection, producer: str, values: Collection[str]) -> dict[str, list[NamedTag]]:
    """:func:`tags_named` for several values in one query."""
    prefix = f"producers/{producer}/tags/"
    wanted: dict[str, tuple[str | None, str] | None] = {}
    for value in values:
        if value.startswith("producers/"):
            # Another producer's tag matches nothing here.
            wanted[value] = _split_tag_id(value.removeprefix(prefix)) if value.startswith(prefix) else None
        else:
            wanted[value] = (None, value)
    keys = sorted({target[1] for target in wanted.values() if target is not None})
    rows: Sequence[sa.Row] = []
    if keys:
        rows = connection.execute(
            sa.select(tags.c.id, tags.c.product, tags.c.key, tags.c.contact_count)
            .where(tags.c.producer == producer, tags.c.key.in_(keys))
            .order_by(tags.c.id)
        ).all()
    found: dict[str, list[NamedTag]] = {}
    for value, target in wanted.items():
        found[value] = [
            NamedTag(row.id, row.contact_count)
            for row in rows
            if target is not None and row.key == target[1] and target[0] in (None, row.product)
        ]
    return found


def _product_named(producer: str, value: str) -> str | None:
    """A product id or resource name -> the product id; None for another producer's product."""
    if value.startswith("producers/"):
        prefix = f"producers/{producer}/products/"
        return value.removeprefix(prefix) if value.startswith(prefix) else None
    return value


def _micros(value: filtering.Value, now: int) -> int:
    """A timestamp value in microseconds; ``now`` is what a relative time is measured from."""
    if isinstance(value, filtering.RelativeTime):
        return value.at(now)
    assert isinstance(value, datetime)
    return to_micros(value)


def _holds(left: float, op: str, right: float) -> bool:
    return {
        "=": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }[op]


class TraitTerm(NamedTuple):
    """A comparison of a purchase trait, resolved: which table, product and currency, which
    column against which value, and whether a contact without purchases (no row) matches."""

    table: sa.Table  # contact_traits or contact_spending
    product: str  # "": the producer as a whole
    currency: str  # contact_spending only
    column: str
    op: str
    value: float
    without_purchases: bool

    def row_conditions(self, row: sa.FromClause, producer: str) -> list[sa.ColumnElement[bool]]:
        """Conditions on a row of the term's table (aliased ``row``) that satisfies it."""
        found = [row.c.producer == producer, row.c.product == self.product]
        if self.table is contact_spending:
            found.append(row.c.currency == self.currency)
        found.append(_compare(row.c[self.column], self.op, self.value))
        return found


def trait_term(comparison: filtering.Comparison, now: int) -> TraitTerm | None:
    """The trait term of ``comparison``, or None when it names no trait."""
    name, _, rest = comparison.field.partition(".")
    if name not in _TRAIT_FIELDS:
        return None
    value = comparison.value
    if name == "spent":
        currency, _, product = rest.partition(".")
        assert isinstance(value, int | float)
        amount = round(value * 1_000_000)
        return TraitTerm(
            contact_spending,
            product,
            currency.upper(),
            "amount",
            comparison.op,
            amount,
            _holds(0, comparison.op, amount),
        )
    if name == "purchases":
        assert isinstance(value, int | float)
        return TraitTerm(contact_traits, rest, "", name, comparison.op, value, _holds(0, comparison.op, value))
    # A time: a contact that never bought has none, and no comparison with it holds.
    return TraitTerm(contact_traits, rest, "", name, comparison.op, _micros(value, now), False)


def has_relative_time(node: filtering.Node | None) -> bool:
    """Whether ``node`` compares with ``now - <duration>``, so its matches change as time passes."""
    return any(isinstance(c.value, filtering.RelativeTime) for c in filtering.comparisons(node))


def _attribute(connection: Connection, key: str) -> sa.ColumnElement:
    """The value of the contact's attribute ``key`` ("" when it has none)."""
    if connection.dialect.name == "postgresql":
        value = sa.cast(contacts.c.attributes, JSONB)[key].astext
    else:
        value = sa.func.json_extract(contacts.c.attributes, '$."' + key.replace('"', "") + '"')
    return sa.func.coalesce(value, "")


def _text_condition(column: sa.ColumnElement, op: str, value: str) -> sa.ColumnElement[bool]:
    """``=``, ``!=`` (negated by the caller) or ``:`` (``*``: has a value; else contains)."""
    if op != ":":
        return column == value
    return column != "" if value == "*" else _like_contains(column, value)


def _compare(column: sa.ColumnElement, op: str, value) -> sa.ColumnElement[bool]:
    return {
        "=": column == value,
        "!=": column != value,
        "<": column < value,
        "<=": column <= value,
        ">": column > value,
        ">=": column >= value,
    }[op]


def _like_contains(column: sa.ColumnElement, value: str) -> sa.ColumnElement[bool]:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%{escaped}%", escape="\\")


class ContactFilter:
    """A validated contact filter compiled for one producer: SQL conditions, plus
    the single tag or product (if any) that every match must have, to drive the query."""

    def __init__(self, connection: Connection, producer: str, node: filtering.Node | None, now: int | None = None):
        self.producer = producer
        self._connection = connection
        self.node = node
        self.now = to_micros(clock()) if now is None else now
        # Every tag the filter names, looked up in one query.
        self._tags = tags_named_all(
            connection, producer, {str(c.value) for c in filtering.comparisons(node) if c.field == "tag"}
        )
        terms = list(filtering.conjuncts(node))
        # ("tag", NamedTag), ("product", product id) or ("trait", TraitTerm)
        self.driver: tuple[str, object] | None = None
        self.rest: list[filtering.Node] = terms
        # A required single tag drives (the rarest one); else a required product.
        best: tuple[int, int] | None = None
        for index, term in enumerate(terms):
            if isinstance(term, filtering.Comparison) and term.op == "=" and term.field == "tag":
                named = self._named(str(term.value))
                if len(named) == 1 and (best is None or named[0].contact_count < best[0]):
                    best = (named[0].contact_count, index)
        if best is not None:
            term = terms[best[1]]
            assert isinstance(term, filtering.Comparison)  # as chosen above
            self.driver = ("tag", self._named(str(term.value))[0])
            self.rest = terms[: best[1]] + terms[best[1] + 1 :]
        else:
            for index, term in enumerate(terms):
                if isinstance(term, filtering.Comparison) and term.field == "product" and term.op == "=":
                    product = _product_named(producer, str(term.value))
                    if product is not None:
                        self.driver = ("product", product)
                        self.rest = terms[:index] + terms[index + 1 :]
                        break
        if self.driver is None:
            # A trait only buyers can have: its rows hold only them, in id order.
            for index, term in enumerate(terms):
                trait = trait_term(term, self.now) if isinstance(term, filtering.Comparison) else None
                if trait is not None and not trait.without_purchases:
                    self.driver = ("trait", trait)
                    self.rest = terms[:index] + terms[index + 1 :]
                    break

    def _named(self, value: str) -> list[NamedTag]:
        return self._tags[value]

    @property
    def single_tag(self) -> NamedTag | None:
        """The tag when the whole filter is `tag = X` naming exactly one tag."""
        if self.driver is not None and self.driver[0] == "tag" and not self.rest:
            return self.driver[1]  # type: ignore[return-value]
        return None

    def uses_contact_columns(self) -> bool:
        return any(
            comparison.field not in ("tag", "product") and comparison.field.partition(".")[0] not in _TRAIT_FIELDS
            for term in self.rest
            for comparison in filtering.comparisons(term)
        )

    def conditions(self, subject: sa.ColumnElement) -> list[sa.ColumnElement[bool]]:
        """The conditions besides the driver; ``subject`` is the contact id column they correlate to."""
        return [self._compile(term, subject) for term in self.rest]

    def _compile(self, node: filtering.Node, subject: sa.ColumnElement) -> sa.ColumnElement[bool]:
        if isinstance(node, filtering.And):
            return sa.and_(*(self._compile(term, subject) for term in node.terms))
        if isinstance(node, filtering.Or):
            return sa.or_(*(self._compile(term, subject) for term in node.terms))
        if isinstance(node, filtering.Not):
            return sa.not_(self._compile(node.term, subject))
        assert isinstance(node, filtering.Comparison)
        condition: sa.ColumnElement[bool]
        if node.field == "tag":
            ids = [tag.id for tag in self._named(str(node.value))]
            linked = contact_tags.alias()
            condition = (
                sa.exists().where(
                    linked.c.contact_id == subject,
                    linked.c.tag_id.in_(ids) if len(ids) > 1 else linked.c.tag_id == ids[0],
                    linked.c.present == sa.true(),
                )
                if ids
                else sa.false()
            )
        elif node.field == "product":
            product = _product_named(self.producer, str(node.value))
            linked = contact_products.alias()
            condition = (
                sa.exists().where(linked.c.contact_id == subject, linked.c.product == product)
                if product is not None
                else sa.false()
            )
        elif node.field == "email":
            value = str(node.value).strip().lower()
            condition = _like_contains(contacts.c.email, value) if node.op == ":" else contacts.c.email == value
        elif node.field == "source":
            condition = contacts.c.source == contacts_pb.CONTACT_SOURCE_AUTO
        elif node.field == "country":
            value = str(node.value).strip()
            condition = _text_condition(contacts.c.country_code, node.op, value if value == "*" else value.upper())
        elif node.field == "phone":
            condition = _text_condition(contacts.c.phone, node.op, str(node.value).strip())
        elif node.field.startswith("attributes."):
            key = node.field.removeprefix("attributes.")
            condition = _text_condition(_attribute(self._connection, key), node.op, str(node.value))
        elif (trait := trait_term(node, self.now)) is not None:
            return self._trait_condition(trait, subject)
        else:  # a time
            return _compare(contacts.c[node.field], node.op, _micros(node.value, self.now))
        return sa.not_(condition) if node.op == "!=" else condition

    def _trait_condition(self, trait: TraitTerm, subject: sa.ColumnElement) -> sa.ColumnElement[bool]:
        row = trait.table.alias()
        if not trait.without_purchases:
            return sa.exists().where(row.c.contact_id == subject, *trait.row_conditions(row, self.producer))
        # Holds without purchases (`purchases < 2`): true unless a row says otherwise.
        keys = [row.c.contact_id == subject, row.c.product == trait.product]
        if trait.table is contact_spending:
            keys.append(row.c.currency == trait.currency)
        return sa.not_(sa.exists().where(*keys, sa.not_(_compare(row.c[trait.column], trait.op, trait.value))))

    def whole_condition(self) -> sa.ColumnElement[bool] | None:
        """The whole filter as one condition on a contacts row (None: no filter)."""
        if self.node is None:
            return None
        return self._compile(self.node, contacts.c.id)

    def _driven(self, columns: Sequence) -> tuple[sa.Select, sa.ColumnElement]:
        """SELECT ``columns`` over the matching contacts; returns the query and its id column."""
        if self.driver is None:
            query = sa.select(*columns).select_from(contacts).where(contacts.c.producer == self.producer)
            return query.where(*self.conditions(contacts.c.id)), contacts.c.id
        kind, value = self.driver
        if kind == "tag":
            assert isinstance(value, NamedTag)
            driver = contact_tags.alias("driver")
            subject = driver.c.contact_id
            query = (
                sa.select(*columns)
                .select_from(driver)
                .where(
                    driver.c.tag_id == value.id,
                    driver.c.present == sa.true(),
                )
            )
        elif kind == "trait":
            assert isinstance(value, TraitTerm)
            driver = value.table.alias("driver")
            subject = driver.c.contact_id
            query = sa.select(*columns).select_from(driver).where(*value.row_conditions(driver, self.producer))
        else:
            driver = contact_products.alias("driver")
            subject = driver.c.contact_id
            query = (
                sa.select(*columns)
                .select_from(driver)
                .where(driver.c.producer == self.producer, driver.c.product == value)
            )
        return query.where(*self.conditions(subject)), subject

    def page_query(self, order: SortOrder, after: Sequence | None, limit: int) -> sa.Select:
        column = CONTACT_ORDERS[order.field]
        if column == "id" and self.driver is not None:
            query, subject = self._driven(CONTACT_COLUMNS)
            query = query.join(contacts, contacts.c.id == subject).where(contacts.c.producer == self.producer)
            key: list[sa.ColumnElement] = [subject]
        else:
            query = sa.select(*CONTACT_COLUMNS).where(contacts.c.producer == self.producer)
            query = query.where(*self._all_conditions())
            key = [contacts.c.id] if column == "id" else [contacts.c[column], contacts.c.id]
        if after is not None:
            bound = sa.tuple_(*key) if len(key) > 1 else key[0]
            position = sa.tuple_(*after) if len(key) > 1 else after[-1]
            query = query.where(bound < position if order.descending else bound > position)
            if key[0] is not contacts.c.id and column == "id":
                # The same bound on the joined contacts: PostgreSQL does not carry an
                # inequality across the join, and a merge join would read contacts from the start.
                query = query.where(contacts.c.id < after[-1] if order.descending else contacts.c.id > after[-1])
        ordering = [k.desc() if order.descending else k.asc() for k in key]
        return query.order_by(*ordering).limit(limit)

    def _all_conditions(self) -> list[sa.ColumnElement[bool]]:
        conditions = self.conditions(contacts.c.id)
        if self.driver is not None:
            kind, value = self.driver
            if kind == "tag":
                assert isinstance(value, NamedTag)
                linked = contact_tags.alias()
                conditions.append(
                    sa.exists().where(
                        linked.c.contact_id == contacts.c.id,
                        linked.c.tag_id == value.id,
                        linked.c.present == sa.true(),
                    )
                )
            elif kind == "trait":
                assert isinstance(value, TraitTerm)
                conditions.append(self._trait_condition(value, contacts.c.id))
            else:
                linked = contact_products.alias()
                conditions.append(sa.exists().where(linked.c.contact_id == contacts.c.id, linked.c.product == value))
        return conditions

    def count(self) -> int:
        single = self.single_tag
        if single is not None:
            # Kept by apply.py as links change: one row read, however many contacts carry the tag.
            return single.contact_count
        if self.driver is None and len(self.rest) == 1:
            term = self.rest[0]
            if isinstance(term, filtering.Comparison) and term.field == "tag" and term.op == "=":
                # A key several products use: the union of their links, read from the tag index.
                ids = [tag.id for tag in self._named(str(term.value))]
                if not ids:
                    return 0
                return self._connection.execute(
                    sa.select(sa.func.count(sa.distinct(contact_tags.c.contact_id))).where(
                        contact_tags.c.tag_id.in_(ids), contact_tags.c.present == sa.true()
                    )
                ).scalar_one()
        if self.driver is None:
            query = sa.select(sa.func.count()).select_from(contacts).where(contacts.c.producer == self.producer)
            return self._connection.execute(query.where(*self.conditions(contacts.c.id))).scalar_one()
        query, subject = self._driven([sa.func.count()])
        if self.uses_contact_columns():
            query = query.join(contacts, contacts.c.id == subject)
        return self._connection.execute(query).scalar_one()


def position_of(row: ContactRow, order: SortOrder) -> list:
    """The keyset position after ``row`` in ``order`` (what a page token carries)."""
    column = CONTACT_ORDERS[order.field]
    return [row.id] if column == "id" else [getattr(row, column), row.id]


class ContactRow(NamedTuple):
    """What reads return of a contact. A named tuple, not a SQLAlchemy Row: its
    fields read in nanoseconds, which matters at export rates."""

    id: int
    email: str
    display_name: str
    phone: str
    country_code: str
    source: int
    attributes: str  # JSON {key: value}: the contact data segmentations chose to send
    first_event_time: int
    last_event_time: int
    create_time: int
    update_time: int


CONTACT_COLUMNS = tuple(contacts.c[name] for name in ContactRow._fields)


class ContactTagRow(NamedTuple):
    """A present tag link with its tag."""

    contact_id: int
    stamp_time: int
    stamp_event: str
    segmentation: str
    product: str
    key: str
    display_name: str
    automatic: bool


def _contact_tags(connection: Connection, contact_ids: Sequence[int]) -> dict[int, list[ContactTagRow]]:
    found: dict[int, list[ContactTagRow]] = defaultdict(list)
    if not contact_ids:
        return found
    rows = connection.execute(
        sa.select(
            contact_tags.c.contact_id,
            contact_tags.c.stamp_time,
            contact_tags.c.stamp_event,
            contact_tags.c.segmentation,
            tags.c.product,
            tags.c.key,
            tags.c.display_name,
            tags.c.automatic,
        )
        .join(tags, tags.c.id == contact_tags.c.tag_id)
        .where(contact_tags.c.contact_id.in_(contact_ids), contact_tags.c.present == sa.true())
    ).all()
    make = ContactTagRow._make
    # Sorted here, not in SQL: SQLite would sort the joined rows in a temporary B-tree.
    for row in sorted(rows, key=lambda row: (row[0], row[4], row[5])):
        found[row[0]].append(make(row))
    return found


def list_contacts(
    connection: Connection,
    producer: str,
    node: filtering.Node | None,
    after: Sequence | int | None,
    limit: int,
    order: SortOrder = DEFAULT_ORDER,
    with_tags: bool = True,
) -> list[tuple[ContactRow, list[ContactTagRow]]]:
    """One page of matching contacts after the keyset position ``after``
    (:func:`position_of` of the previous page's last row; an int is an id)."""
    if isinstance(after, int):
        after = [after]
    query = ContactFilter(connection, producer, node).page_query(order, after, limit)
    make = ContactRow._make
    rows = [make(row) for row in connection.execute(query)]
    if not with_tags:
        return [(row, []) for row in rows]
    tag_rows = _contact_tags(connection, [row.id for row in rows])
    return [(row, tag_rows.get(row.id, [])) for row in rows]


# Ids per IN (...) list when evaluating a filter for given contacts.
_IDS_PER_QUERY = 500


def count_contacts(connection: Connection, producer: str, node: filtering.Node | None) -> int:
    return ContactFilter(connection, producer, node).count()


def matching_contact_ids(
    connection: Connection,
    producer: str,
    node: filtering.Node | None,
    contact_ids: Collection[int],
    now: int | None = None,
) -> set[int]:
    """The ids among ``contact_ids`` (the producer's contacts) that match ``node``.

    ``node`` is a parsed contact filter (:func:`parse_contact_filter`); None matches
    every contact. ``now`` (microseconds since the epoch; default: the clock) is the
    instant relative times such as ``last_purchase_time >= now - 30d`` are measured
    from. Runs in the caller's transaction, in chunks of ids, so a batch's touched
    contacts cost a few indexed queries.
    """
    wanted = sorted(set(contact_ids))
    if not wanted:
        return set()
    compiled = ContactFilter(connection, producer, node, now)
    condition = compiled.whole_condition()
    found: set[int] = set()
    for start in range(0, len(wanted), _IDS_PER_QUERY):
        chunk = wanted[start : start + _IDS_PER_QUERY]
        query = sa.select(contacts.c.id).where(contacts.c.producer == producer, contacts.c.id.in_(chunk))
        if condition is not None:
            query = query.where(condition)
        found.update(connection.execute(query).scalars())
    return found


def all_matching_contact_ids(
    connection: Connection, producer: str, node: filtering.Node | None, now: int | None = None
) -> set[int]:
    """Every id of the producer's contacts that match ``node`` (see :func:`matching_contact_ids`)."""
    compiled = ContactFilter(connection, producer, node, now)
    if compiled.driver is not None:
        query, subject = compiled._driven([])
        query = query.add_columns(subject)
        if compiled.uses_contact_columns():
            query = query.join(contacts, contacts.c.id == subject)
        return set(connection.execute(query).scalars())
    query = sa.select(contacts.c.id).where(contacts.c.producer == producer, *compiled.conditions(contacts.c.id))
    return set(connection.execute(query).scalars())


def get_contact(
    connection: Connection, producer: str, contact_id: int
) -> tuple[ContactRow, list[ContactTagRow]] | None:
    found = connection.execute(
        sa.select(*CONTACT_COLUMNS).where(contacts.c.producer == producer, contacts.c.id == contact_id)
    ).first()
    if found is None:
        return None
    row = ContactRow._make(found)
    return row, _contact_tags(connection, [row.id]).get(row.id, [])


class PurchaseTraits(NamedTuple):
    """A contact's purchase traits for one product ("": the producer as a whole)."""

    product: str
    purchases: int
    first_purchase_time: int
    last_purchase_time: int
    spent: list[tuple[str, int]]  # (currency, millionths of its unit), by currency


def purchase_traits(connection: Connection, contact_id: int) -> list[PurchaseTraits]:
    """The contact's traits: the producer as a whole first, then each product bought, by id."""
    spent: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for product, currency, amount in connection.execute(
        sa.select(contact_spending.c.product, contact_spending.c.currency, contact_spending.c.amount)
        .where(contact_spending.c.contact_id == contact_id)
        .order_by(contact_spending.c.product, contact_spending.c.currency)
    ):
        spent[product].append((currency, amount))
    rows = connection.execute(
        sa.select(
            contact_traits.c.product,
            contact_traits.c.purchases,
            contact_traits.c.first_purchase_time,
            contact_traits.c.last_purchase_time,
        )
        .where(contact_traits.c.contact_id == contact_id)
        .order_by(contact_traits.c.product)
    )
    return [PurchaseTraits(product, count, first, last, spent.get(product, [])) for product, count, first, last in rows]


def list_tags(
    connection: Connection, producer: str, product: str | None, after_id: int | None, limit: int
) -> Sequence[sa.Row]:
    query = sa.select(tags).where(tags.c.producer == producer)
    if product is not None:
        query = query.where(tags.c.product == product)
    if after_id is not None:
        query = query.where(tags.c.id > after_id)
    return connection.execute(query.order_by(tags.c.id).limit(limit)).all()


@dataclass(frozen=True)
class HistoryRow:
    id: int
    product: str
    event_id: str
    event_type: event_pb2.EventType
    occur_time: int
    record_time: int
    contact_id: int | None
    email: str
    contact_created: bool
    added_tags: list[str]
    removed_tags: list[str]
    fired_segmentations: list[str]


def _history_condition(producer: str, node: filtering.Node) -> sa.ColumnElement[bool]:
    if isinstance(node, filtering.And):
        return sa.and_(*(_history_condition(producer, term) for term in node.terms))
    if isinstance(node, filtering.Or):
        return sa.or_(*(_history_condition(producer, term) for term in node.terms))
    if isinstance(node, filtering.Not):
        return sa.not_(_history_condition(producer, node.term))
    assert isinstance(node, filtering.Comparison)
    if node.field == "type":
        condition = history.c.event_type == _EVENT_TYPES[str(node.value)]
    elif node.field == "email":
        value = str(node.value).strip().lower()
        condition = _like_contains(history.c.email, value) if node.op == ":" else history.c.email == value
    elif node.field == "contact":
        value = str(node.value)
        prefix = f"producers/{producer}/contacts/"
        ident = value.removeprefix(prefix)
        condition = history.c.contact_id == int(ident) if value.startswith(prefix) and ident.isdigit() else sa.false()
    else:
        return _compare(history.c[node.field], node.op, _micros(node.value, to_micros(clock())))
    return sa.not_(condition) if node.op == "!=" else condition


def list_history(
    connection: Connection,
    producer: str,
    product: str,
    before_id: int | None,
    limit: int,
    node: filtering.Node | None = None,
) -> list[HistoryRow]:
    """Newest recorded first."""
    query = sa.select(history).where(history.c.producer == producer, history.c.product == product)
    if node is not None:
        query = query.where(_history_condition(producer, node))
    if before_id is not None:
        query = query.where(history.c.id < before_id)
    rows = connection.execute(query.order_by(history.c.id.desc()).limit(limit))
    return [
        HistoryRow(
            row.id,
            row.product,
            row.event_id,
            row.event_type,
            row.occur_time,
            row.record_time,
            row.contact_id,
            row.email,
            row.contact_created,
            json.loads(row.added_tags),
            json.loads(row.removed_tags),
            json.loads(row.fired_segmentations),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Dashboard:
    start_day: int
    end_day: int  # exclusive
    contact_count: int
    events_by_type: list[tuple[event_pb2.EventType, int]]  # (event type, count), most frequent first
    days: list[tuple[int, int, int]]  # (day, events, captured)
    tags: Sequence[sa.Row]

    @property
    def event_count(self) -> int:
        return sum(events for _, events, _ in self.days)

    @property
    def contacts_captured(self) -> int:
        return sum(captured for _, _, captured in self.days)


def product_dashboard(connection: Connection, producer: str, product: str, start_day: int, end_day: int) -> Dashboard:
    contact_count = connection.execute(
        sa.select(sa.func.count())
        .select_from(contact_products)
        .where(contact_products.c.producer == producer, contact_products.c.product == product)
    ).scalar_one()
    in_range = (
        product_daily.c.producer == producer,
        product_daily.c.product == product,
        product_daily.c.day >= start_day,
        product_daily.c.day < end_day,
    )
    by_type = connection.execute(
        sa.select(product_daily.c.event_type, sa.func.sum(product_daily.c.events).label("events"))
        .where(*in_range)
        .group_by(product_daily.c.event_type)
    ).all()
    days = connection.execute(
        sa.select(
            product_daily.c.day,
            sa.func.sum(product_daily.c.events).label("events"),
            sa.func.sum(product_daily.c.captured).label("captured"),
        )
        .where(*in_range)
        .group_by(product_daily.c.day)
        .order_by(product_daily.c.day)
    ).all()
    tag_rows = connection.execute(
        sa.select(tags).where(tags.c.producer == producer, tags.c.product == product).order_by(tags.c.key)
    ).all()
    return Dashboard(
        start_day,
        end_day,
        contact_count,
        sorted(((row.event_type, int(row.events)) for row in by_type), key=lambda item: (-item[1], item[0])),
        [(row.day, int(row.events), int(row.captured)) for row in days],
        tag_rows,
    )
