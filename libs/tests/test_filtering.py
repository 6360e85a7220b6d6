"""Tests of the AIP-160 filter parser and validator."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listboss_common.filtering import (
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    Comparison,
    FieldSpec,
    FilterError,
    Node,
    Not,
    Or,
    RelativeTime,
    parse,
    validate,
)
from listboss_common.filtering import comparisons as comparisons_in


def c(field: str, op: str, value, quoted: bool = False) -> Comparison:
    """A comparison; its position takes no part in equality."""
    return Comparison(field, op, value, quoted)


A, B, C, D = c("a", "=", 1), c("b", "=", 2), c("c", "=", 3), c("d", "=", 4)


def shape(node: Node | None):
    """``node`` as nested tuples that also record value types, so 1, 1.0 and True differ."""
    match node:
        case None:
            return None
        case Comparison():
            return ("cmp", node.field, node.op, type(node.value).__name__, node.value, node.quoted)
        case And():
            return ("and", *map(shape, node.terms))
        case Or():
            return ("or", *map(shape, node.terms))
        case Not():
            return ("not", shape(node.term))
    raise AssertionError(node)


def assert_parses(text: str, expected: Node | None) -> None:
    assert shape(parse(text)) == shape(expected)


def error_of(text: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        parse(text)
    return info.value


# --------------------------------------------------------------------------- comparisons and values


@pytest.mark.parametrize("text", ["", "   ", " \t\r\n "])
def test_empty_filter_is_none(text):
    assert parse(text) is None


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">=", ":"])
def test_every_operator_with_and_without_spaces(op):
    assert_parses(f"a {op} 1", c("a", op, 1))
    assert_parses(f"a{op}1", c("a", op, 1))


@pytest.mark.parametrize(
    ("text", "value", "quoted"),
    [
        ('a = "hello world"', "hello world", True),
        ("a = 'hello'", "hello", True),
        ('a = "5"', "5", True),
        ('a = "true"', "true", True),
        ('a = ""', "", True),
        ('a = "(x AND y) OR NOT z"', "(x AND y) OR NOT z", True),
        ("a = 42", 42, False),
        ("a = -7", -7, False),
        ("a = +7", 7, False),
        ("a = 2.5", 2.5, False),
        ("a = -.5", -0.5, False),
        ("a = 1e3", 1000.0, False),
        ("a = 1.5E-2", 0.015, False),
        ("a = true", True, False),
        ("a = false", False, False),
        ("a = True", "True", False),
        ("a = AUTO", "AUTO", False),
        ("a = ANDROID", "ANDROID", False),
        ("a = 2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", False),
        ("a = 2024-01-01T00:00:00+02:00", "2024-01-01T00:00:00+02:00", False),
        ("a = x.y-z", "x.y-z", False),
        ("a = 1.2.3", "1.2.3", False),
        ("a = café", "café", False),
    ],
)
def test_value_kinds(text, value, quoted):
    assert_parses(text, c("a", "=", value, quoted))


def test_colon_inside_a_bare_value():
    # The first ':' is the operator; the rest belongs to the value.
    assert_parses("a:b:c", c("a", ":", "b:c"))


def test_dotted_field_names():
    assert_parses("a.b.c_1 = x", c("a.b.c_1", "=", "x"))
    assert_parses("_private = x", c("_private", "=", "x"))


def test_field_parts_after_the_first_may_start_with_a_digit():
    assert parse("purchases.4774438 >= 1") == c("purchases.4774438", ">=", 1)
    assert parse("spent.BRL.0042 > 9.5") == c("spent.BRL.0042", ">", 9.5)


@pytest.mark.parametrize(
    ("text", "offset", "written"),
    [
        ("t >= now", 0, "now"),
        ("t >= now - 30d", -30 * 86_400, "now - 30d"),
        ("t >= now-12h", -12 * 3600, "now-12h"),
        ("t < now +2w", 14 * 86_400, "now +2w"),
        ("t > now - 90m", -90 * 60, "now - 90m"),
        ("t > now-5s", -5, "now-5s"),
    ],
)
def test_relative_times(text, offset, written):
    assert parse(text) == c("t", text.split()[1], RelativeTime(offset, written))


def test_relative_time_is_measured_from_the_instant_given_and_ends_where_the_text_says():
    node = parse("(t >= now - 1d) AND x = 1")
    assert node == And((c("t", ">=", RelativeTime(-86_400, "now - 1d")), c("x", "=", 1)))
    assert RelativeTime(-86_400, "now - 1d").at(100 * 86_400 * 1_000_000) == 99 * 86_400 * 1_000_000
    # Not a relative time: another bare word.
    assert parse("t = nowhere") == c("t", "=", "nowhere")
    assert parse("t = now+x") == c("t", "=", "now+x")


@pytest.mark.parametrize("text", ["t > now - 3x", "t > now -", "t > now + d"])
def test_a_sign_after_now_needs_a_duration(text):
    with pytest.raises(FilterError) as info:
        parse(text)
    assert info.value.message == "expected a duration such as 30d, 12h or 2w after 'now' and its sign"
    assert info.value.position == 7


def test_relative_times_validate_for_timestamps_and_read_as_text_for_strings():
    fields = {
        "t": FieldSpec("t", frozenset({">="}), "timestamp"),
        "s": FieldSpec("s", frozenset({"="}), "string"),
        "n": FieldSpec("n", frozenset({"="}), "number"),
    }
    assert validate(parse("t >= now - 1d"), fields) == c("t", ">=", RelativeTime(-86_400, "now - 1d"))
    assert validate(parse("s = now"), fields) == c("s", "=", "now")
    with pytest.raises(FilterError, match="field 'n' expects a number, got now"):
        validate(parse("n = now"), fields)


def test_prefix_field_specs_accept_any_key_under_them():
    fields = {"attributes.*": FieldSpec("attributes.*", frozenset({"=", ":"}), "string")}
    node = parse('attributes.address.city = "Lisboa" attributes.plan:*')
    assert validate(node, fields) == And(
        (c("attributes.address.city", "=", "Lisboa", True), c("attributes.plan", ":", "*"))
    )
    with pytest.raises(FilterError, match=r"unknown field 'attributes'; known fields: attributes\.\*"):
        validate(parse('attributes = "x"'), fields)


def test_keywords_are_upper_case_only():
    assert_parses("and = 1", c("and", "=", 1))
    assert_parses("not = 1 or = 2", And((c("not", "=", 1), c("or", "=", 2))))
    assert_parses("NOTE = 1 ORDER = 2", And((c("NOTE", "=", 1), c("ORDER", "=", 2))))
    assert_parses("AND.x = 1", c("AND.x", "=", 1))


def test_positions_point_at_field_names():
    node = parse('  tag = "a b"  OR\n  email : x')
    assert isinstance(node, Or)
    assert [term.position for term in node.terms] == [2, 20]


def test_position_takes_no_part_in_equality():
    assert parse("a = 1") == parse("   a=1")
    assert hash(Comparison("a", "=", 1, False, 0)) == hash(Comparison("a", "=", 1, False, 9))


# --------------------------------------------------------------------------- quoting


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'a = "he said \"hi\""', 'he said "hi"'),
        (r"a = 'it\'s'", "it's"),
        (r'a = "back\\slash"', "back\\slash"),
        (r'a = "ends with \\"', "ends with \\"),
        ('a = "it\'s"', "it's"),
        ("a = 'say \"hi\"'", 'say "hi"'),
        (r'a = "\'"', "'"),
        ('a = "two\nlines"', "two\nlines"),
    ],
)
def test_quoting_and_escapes(text, value):
    assert_parses(text, c("a", "=", value, quoted=True))


def test_quoted_value_may_touch_the_next_token():
    assert_parses('(a="x")', c("a", "=", "x", True))
    assert_parses('a="x"AND b=2', And((c("a", "=", "x", True), B)))


# --------------------------------------------------------------------------- precedence and structure


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # AIP-160: OR binds tighter than AND.
        ("a=1 AND b=2 OR c=3", And((A, Or((B, C))))),
        ("a=1 OR b=2 AND c=3", And((Or((A, B)), C))),
        ("a=1 OR b=2 AND c=3 OR d=4", And((Or((A, B)), Or((C, D))))),
        ("a=1 AND b=2 AND c=3", And((A, B, C))),
        ("a=1 OR b=2 OR c=3", Or((A, B, C))),
        # Implicit AND has the precedence of AND.
        ("a=1 b=2", And((A, B))),
        ("a=1 b=2 OR c=3", And((A, Or((B, C))))),
        ("a=1 b=2 AND c=3 d=4", And((A, B, C, D))),
        ("a=1\nb=2", And((A, B))),
        ("a=1(b=2)", And((A, B))),
    ],
)
def test_precedence(text, expected):
    assert_parses(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOT a=1", Not(A)),
        ("-a=1", Not(A)),
        ("- a=1", Not(A)),
        ("NOT NOT a=1", Not(Not(A))),
        ("--a=1", Not(Not(A))),
        ("-NOT a=1", Not(Not(A))),
        ("NOT-a=1", Not(Not(A))),
        ("NOT(a=1)", Not(A)),
        # NOT takes one term: it binds tighter than OR.
        ("NOT a=1 OR b=2", Or((Not(A), B))),
        ("NOT (a=1 OR b=2)", Not(Or((A, B)))),
        ("-(a=1 AND b=2) c=3", And((Not(And((A, B))), C))),
        ("a=1 -b=2", And((A, Not(B)))),
        ("a=1 NOT b=2", And((A, Not(B)))),
    ],
)
def test_negation(text, expected):
    assert_parses(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(a=1)", A),
        ("((( a=1 )))", A),
        ("(a=1 AND b=2) OR c=3", Or((And((A, B)), C))),
        ("a=1 AND (b=2 OR c=3)", And((A, Or((B, C))))),
        ("(a=1 OR b=2) AND c=3", And((Or((A, B)), C))),
        # Nested groups of the same kind collapse.
        ("a=1 AND (b=2 AND c=3)", And((A, B, C))),
        ("(a=1 b=2) (c=3 AND d=4)", And((A, B, C, D))),
        ("a=1 OR (b=2 OR (c=3))", Or((A, B, C))),
        ("(a=1 OR b=2) OR (c=3 AND d=4)", Or((A, B, And((C, D))))),
    ],
)
def test_parentheses(text, expected):
    assert_parses(text, expected)


def test_nodes_are_frozen_and_hashable():
    node = parse("a=1 AND (b=2 OR NOT c=3)")
    assert node == parse("a = 1 AND (b = 2 OR -c = 3)")
    assert {node: 1}[parse("a=1 AND (b=2 OR -c=3)")] == 1
    with pytest.raises(AttributeError):
        node.terms = ()  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ('a = "abc', "unterminated string", 4),
        ("a = 'abc\\'", "unterminated string", 4),
        ('a = 1 AND b = "x\\', "unterminated string", 14),
        ('a = "x\\n"', "unsupported escape '\\n' in string; only \\\", \\' and \\\\ are allowed", 6),
        ("a =", "expected a value after '=', found end of input", 3),
        ("a >=   ", "expected a value after '>=', found end of input", 7),
        ("(a = )", "expected a value after '=', found ')'", 5),
        ("a == 1", "expected a value after '=', found '='", 3),
        ("a = AND b = 1", "expected a value after '=', found keyword 'AND'", 4),
        ("a = (1 OR 2)", "expected a value after '=', found '('", 4),
        ("a", "expected an operator after field 'a', found end of input", 1),
        ("a 1", "expected an operator after field 'a', found '1'", 2),
        ("a ! b", "expected an operator after field 'a', found '!'", 2),
        ("a.b AND", "expected an operator after field 'a.b', found keyword 'AND'", 4),
        ("a. = 1", "expected a name after '.' in field 'a.'", 2),
        ("a.-1 = 1", "expected a name after '.' in field 'a.'", 2),
        ("(a = 1", "expected ')' to close the '(' at position 0, found end of input", 6),
        ("x=0 ((a = 1) OR b=2 ", "expected ')' to close the '(' at position 4, found end of input", 20),
        ("a = 1)", "unmatched ')'", 5),
        ("(a = 1))", "unmatched ')'", 7),
        ("a = 1 AND", "expected a comparison after 'AND', found end of input", 9),
        ("a = 1 AND OR b = 2", "expected a comparison after 'AND', found keyword 'OR'", 10),
        ("a = 1 OR", "expected a comparison after 'OR', found end of input", 8),
        ("a = 1 OR )", "expected a comparison after 'OR', found ')'", 9),
        ("NOT", "expected a comparison after 'NOT', found end of input", 3),
        ("-", "expected a comparison after '-', found end of input", 1),
        ("-5 = a", "expected a comparison after '-', found '5'", 1),
        ("()", "expected a comparison after '(', found ')'", 1),
        ("AND a = 1", "expected a comparison, found keyword 'AND'", 0),
        ("OR", "expected a comparison, found keyword 'OR'", 0),
        ("= 1", "expected a comparison, found '='", 0),
        ("  )", "expected a comparison, found ')'", 2),
        ('"foo"', "expected a comparison, found '\"'", 0),
        ("1 = a", "expected a comparison, found '1'", 0),
        ("\x00", "expected a comparison, found '\\x00'", 0),
        ("a = 1 = 2", "unexpected '='", 6),
        ('a = 1 "x"', "unexpected '\"'", 6),
        ("a = 1 <= 2", "unexpected '<='", 6),
        ("a = 1e999", "number '1e999' is out of range", 4),
    ],
)
def test_errors_and_their_positions(text, message, position):
    err = error_of(text)
    assert (err.message, err.position) == (message, position)


def test_error_text_and_type():
    err = error_of('a = "abc')
    assert isinstance(err, ValueError)
    assert str(err) == "unterminated string (at position 4)"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.message, copy.position, str(copy)) == (err.message, err.position, str(err))


def test_length_limit():
    fits = "a=1 " * (MAX_LENGTH // 4)
    assert len(fits) == MAX_LENGTH
    assert isinstance(parse(fits), And)
    err = error_of(fits + "b")
    assert (err.message, err.position) == (f"filter is too long ({MAX_LENGTH + 1} characters; the limit is 4096)", 4096)


def test_depth_limit_on_parentheses():
    assert_parses("(" * MAX_DEPTH + "a=1" + ")" * MAX_DEPTH, A)
    err = error_of("(" * (MAX_DEPTH + 1) + "a=1" + ")" * (MAX_DEPTH + 1))
    assert (err.message, err.position) == ("filter is nested too deeply (the limit is 64 levels)", MAX_DEPTH)


def test_depth_limit_on_negation():
    node = parse("NOT " * MAX_DEPTH + "a=1")
    for _ in range(MAX_DEPTH):
        assert isinstance(node, Not)
        node = node.term
    assert node == A
    assert error_of("NOT " * (MAX_DEPTH + 1) + "a=1").position == 4 * MAX_DEPTH
    assert error_of("-(" * 40 + "a=1").position == MAX_DEPTH


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("(" * MAX_LENGTH, "nested too deeply"),
        ("-" * MAX_LENGTH, "nested too deeply"),
        ("NOT " * 1000, "nested too deeply"),
        ("a=1 OR " * 585 + "a=1", "too long"),
        ('"' * 4000, "expected a comparison"),
    ],
    ids=["parentheses", "minus-signs", "nots", "too-long", "quotes"],
)
def test_hostile_input_is_a_filter_error_not_a_crash(text: str, reason: str):
    with pytest.raises(FilterError, match=reason):
        parse(text)


# --------------------------------------------------------------------------- validate

FIELDS = {
    spec.name: spec
    for spec in [
        FieldSpec("tag", frozenset({"=", "!=", ":"}), "string"),
        FieldSpec("email", frozenset({"=", "!="}), "string"),
        FieldSpec("state", frozenset({"=", "!="}), "enum", frozenset({"ACTIVE", "UNSUBSCRIBED"})),
        FieldSpec("create_time", frozenset({"=", "!=", "<", "<=", ">", ">="}), "timestamp"),
        FieldSpec("score", frozenset({"=", "<", ">"}), "number"),
    ]
}


def validation_error(text: str, fields=FIELDS) -> FilterError:
    node = parse(text)
    with pytest.raises(FilterError) as info:
        validate(node, fields)
    return info.value


def test_validate_none_and_valid_trees():
    assert validate(None, FIELDS) is None
    node = parse('tag:vip AND (state = ACTIVE OR state = "UNSUBSCRIBED") NOT email = "x@y.z" score > -1.5')
    assert validate(node, FIELDS) == node


def test_validate_unknown_field():
    err = validation_error("tag = a AND  foo = 1")
    assert err.message == "unknown field 'foo'; known fields: create_time, email, score, state, tag"
    assert err.position == 13
    assert validation_error("x = 1", {}).message == "unknown field 'x'; known fields: (none)"


def test_validate_unsupported_operator():
    err = validation_error("tag = a OR (email : x)")
    assert err.message == "operator ':' is not supported for field 'email'; supported: =, !="
    assert err.position == 12
    assert validation_error("score >= 1").message == (
        "operator '>=' is not supported for field 'score'; supported: =, <, >"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("create_time > yesterday", "invalid timestamp 'yesterday' for field 'create_time'"),
        ("create_time > 2024-01-01", "invalid timestamp '2024-01-01' for field 'create_time'"),
        ("create_time > 2024-01-01T00:00:00", "invalid timestamp '2024-01-01T00:00:00' for field 'create_time'"),
        ("create_time > 20240101T000000Z", "invalid timestamp '20240101T000000Z' for field 'create_time'"),
        ("create_time > 2024-13-01T00:00:00Z", "invalid timestamp '2024-13-01T00:00:00Z' for field 'create_time'"),
        ("create_time > 2024-02-30T00:00:00Z", "invalid timestamp '2024-02-30T00:00:00Z' for field 'create_time'"),
        (
            "create_time > 2024-01-01T00:00:00+24:00",
            "invalid timestamp '2024-01-01T00:00:00+24:00' for field 'create_time'",
        ),
        ("create_time > 1704067200", "invalid timestamp 1704067200 for field 'create_time'"),
    ],
)
def test_validate_bad_timestamp(text, message):
    err = validation_error("tag = x " + text)
    assert err.message == message + "; expected RFC 3339 such as 2024-01-01T00:00:00Z"
    assert err.position == 8


def test_validate_converts_timestamps():
    node = validate(
        parse('create_time >= 2024-01-01T00:00:00Z AND NOT create_time < "2024-06-01t12:30:00.25+02:00"'), FIELDS
    )
    assert isinstance(node, And)
    first, negated = node.terms
    assert first.value == datetime(2024, 1, 1, tzinfo=UTC)
    assert first.value.tzinfo is not None
    assert first.position == 0
    assert isinstance(negated, Not)
    second = negated.term.value
    assert second == datetime(2024, 6, 1, 12, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert second.utcoffset() == timedelta(hours=2)
    assert negated.term.position == 44
    # A converted tree validates again unchanged.
    assert validate(node, FIELDS) == node


def test_validate_enum():
    err = validation_error("state = PAUSED")
    assert err.message == "invalid value 'PAUSED' for field 'state'; expected one of: ACTIVE, UNSUBSCRIBED"
    assert err.position == 0
    assert validation_error("state = active").message.startswith("invalid value 'active' ")
    assert validation_error("state = 1").message.startswith("invalid value 1 ")
    assert validate(parse("state = 'ACTIVE'"), FIELDS) == c("state", "=", "ACTIVE", quoted=True)


def test_validate_number():
    assert validate(parse("score > 5"), FIELDS) == c("score", ">", 5)
    assert validate(parse("score < 2.5"), FIELDS) == c("score", "<", 2.5)
    assert validation_error('score > "5"').message == "field 'score' expects a number, got '5'"
    assert validation_error("score > true").message == "field 'score' expects a number, got true"
    assert validation_error("score > lots").message == "field 'score' expects a number, got 'lots'"


def test_validate_string():
    assert validate(parse('tag = "2024"'), FIELDS) == c("tag", "=", "2024", quoted=True)
    assert validation_error("tag = 2024").message == (
        "field 'tag' expects a string, got 2024; quote it to compare as text"
    )
    assert validation_error("tag = false").message.startswith("field 'tag' expects a string, got false;")


def test_validate_reports_the_first_bad_comparison():
    err = validation_error("tag = a (state = ACTIVE OR NOT score > x)")
    assert err.position == 31


@pytest.mark.parametrize(
    "make",
    [
        lambda: FieldSpec("x", frozenset({"="}), "text"),
        lambda: FieldSpec("x", frozenset({"=="}), "string"),
        lambda: FieldSpec("x", frozenset({"="}), "enum"),
        lambda: FieldSpec("x", frozenset({"="}), "string", frozenset({"A"})),
    ],
)
def test_misconfigured_field_spec_is_a_programming_error(make):
    with pytest.raises(ValueError) as info:
        make()
    assert not isinstance(info.value, FilterError)


# --------------------------------------------------------------------------- properties

KEYWORDS = {"AND", "OR", "NOT"}
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
fields = st.lists(names, min_size=1, max_size=3).map(".".join).filter(lambda f: f not in KEYWORDS)
# Bare words that stay strings: not a keyword, not a number, not true/false, not a relative time.
bare_words = st.one_of(
    st.from_regex(r"[A-Za-z_:][A-Za-z0-9_.:+\-]{0,8}", fullmatch=True),
    st.sampled_from(["AUTO", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00+02:00", "-", "a-b", "x:y", "é"]),
).filter(lambda w: w not in KEYWORDS | {"true", "false"} and not w.startswith("now"))
values = st.one_of(
    st.tuples(st.text(max_size=10), st.just(True)),
    st.tuples(bare_words, st.just(False)),
    st.tuples(st.integers(min_value=-(10**12), max_value=10**12), st.just(False)),
    st.tuples(st.floats(allow_nan=False, allow_infinity=False), st.just(False)),
    st.tuples(st.booleans(), st.just(False)),
)
comparisons = st.builds(
    lambda field, op, value: Comparison(field, op, value[0], value[1]),
    fields,
    st.sampled_from(["=", "!=", "<", "<=", ">", ">=", ":"]),
    values,
)
trees = st.recursive(
    comparisons,
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda terms: And(tuple(terms))),
        st.lists(children, min_size=2, max_size=4).map(lambda terms: Or(tuple(terms))),
        children.map(Not),
    ),
    max_leaves=12,
)


def normalize(node: Node) -> Node:
    """What the parser builds for ``node``: nested And/Or of the same kind flattened."""
    match node:
        case And():
            return And(tuple(_flatten(And, node.terms)))
        case Or():
            return Or(tuple(_flatten(Or, node.terms)))
        case Not():
            return Not(normalize(node.term))
    return node


def _flatten(kind, terms):
    for term in map(normalize, terms):
        if isinstance(term, kind):
            yield from term.terms
        else:
            yield term


def render_value(value, quoted: bool, draw) -> str:
    if quoted:
        quote = draw(st.sampled_from(['"', "'"]))
        escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        return quote + escaped + quote
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def render(node: Node, draw) -> str:
    """``node`` as filter text, with randomly chosen but equivalent spellings."""
    match node:
        case Comparison():
            space = draw(st.sampled_from(["", " "]))
            text = f"{node.field}{space}{node.op}{space}{render_value(node.value, node.quoted, draw)}"
        case And():
            # Or binds tighter than AND, so no child needs parentheses.
            text = draw(st.sampled_from([" AND ", " ", "\n"])).join(render(term, draw) for term in node.terms)
        case Or():
            text = " OR ".join(
                f"({render(term, draw)})" if isinstance(term, And) else render(term, draw) for term in node.terms
            )
        case Not():
            inner = render(node.term, draw)
            if isinstance(node.term, And | Or):
                inner = f"({inner})"
            text = draw(st.sampled_from(["NOT ", "-"])) + inner
    if draw(st.integers(0, 9)) == 0:  # Redundant parentheses change nothing.
        text = f"({text})"
    return text


@settings(max_examples=300, deadline=None, database=None)
@given(trees, st.data())
def test_parse_inverts_render(tree, data):
    text = render(tree, data.draw)
    parsed = parse(text)
    assert shape(parsed) == shape(normalize(tree))
    for comparison in comparisons_in(parsed):
        assert text.startswith(comparison.field, comparison.position)


def check_total(text: str) -> None:
    """parse either returns or raises FilterError with a position inside the text."""
    try:
        parse(text)
    except FilterError as err:
        assert 0 <= err.position <= min(len(text), MAX_LENGTH)
        assert str(err) == f"{err.message} (at position {err.position})"


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(max_size=200))
def test_parse_is_total_on_arbitrary_text(text):
    check_total(text)


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "b.c",
                "=",
                "!=",
                "<",
                "<=",
                ">",
                ">=",
                ":",
                "!",
                "(",
                ")",
                "-",
                '"',
                "'",
                "\\",
                " ",
                "\n",
                "AND",
                "OR",
                "NOT",
                "1",
                "2.5",
                "1e999",
                "true",
                "x:y",
                ".",
            ]
        ),
        max_size=40,
    ).map("".join)
)
def test_parse_is_total_on_filter_like_text(text):
    check_total(text)


def test_comparisons_and_conjuncts():
    from listboss_common.filtering import comparisons, conjuncts

    node = parse("a = 1 AND (b = 2 OR NOT c = 3) d = 4")
    assert [c.field for c in comparisons(node)] == ["a", "b", "c", "d"]
    assert [c.field for c in comparisons(None)] == []
    assert len(conjuncts(node)) == 3 and conjuncts(None) == ()
    assert conjuncts(parse("a = 1")) == (parse("a = 1"),)
