"""AIP-160 filter strings: one parser for every ``filter`` request field.

``parse`` turns the text of a filter into a small tree of :class:`Comparison`,
:class:`And`, :class:`Or` and :class:`Not` nodes; ``validate`` checks that tree
against the fields a method allows (names, operators, value kinds) and converts
timestamps to aware datetimes. Both raise :class:`FilterError`, which carries
the 0-based character offset of the problem so callers can point at it.

Grammar (the subset of https://google.aip.dev/160 we accept), as EBNF::

    filter     = [ expression ] ;
    expression = sequence , { "AND" , sequence } ;
    sequence   = factor , { factor } ;            (* juxtaposition is an implicit AND *)
    factor     = term , { "OR" , term } ;          (* OR binds tighter than AND *)
    term       = ( "NOT" | "-" ) , term
               | "(" , expression , ")"
               | comparison ;
    comparison = field , operator , value ;
    field      = name , { "." , part } ;
    name       = ( letter | "_" ) , { letter | digit | "_" } ;
    part       = ( letter | digit | "_" ) , { letter | digit | "_" } ;  (* a product id: 4774438 *)
    operator   = "<=" | "<" | ">=" | ">" | "!=" | "=" | ":" ;
    value      = relative | string | bare ;
    relative   = "now" , [ ( "-" | "+" ) , digit , { digit } , ( "s" | "m" | "h" | "d" | "w" ) ] ;
    string     = '"' , { escape | ? any character but '"' and "\\" ? } , '"'
               | "'" , { escape | ? any character but "'" and "\\" ? } , "'" ;
    escape     = "\\" , ( '"' | "'" | "\\" ) ;
    bare       = bare char , { bare char } ;
    bare char  = ? any character but whitespace and ( ) " ' = < > ! ? ;

Notes:

* ``a AND b OR c`` means ``a AND (b OR c)``, as AIP-160 specifies; ``NOT`` and
  ``-`` apply to the single term that follows (``NOT a OR b`` is ``(NOT a) OR b``).
* The keywords AND, OR and NOT are upper-case only; ``and = 1`` compares a field
  named ``and``. A bare value that is exactly a keyword is rejected: quote it.
* A bare value ``true``/``false`` is a bool, a bare number is an int or float,
  any other bare word (``AUTO``, ``2024-01-01T00:00:00Z``) is a string. A quoted
  value is always a string.
* ``now``, ``now - 30d``, ``now+2h`` (whitespace optional around the sign) is a
  :class:`RelativeTime`: an instant measured from when the filter is evaluated,
  for timestamp fields ("last purchase within 30 days" stays true only for 30 days).
  Units: s, m, h, d (24 h), w (7 d). For a string field it is the text as written.
* ``field:*`` (a bare ``*``) asks whether the field has a value; the caller decides
  what that means for its fields.
* A field spec named ``prefix.*`` accepts every field ``prefix.<part>...``: the
  rest names a key (``attributes.plan``, ``purchases.4774438``).
* Whitespace is ASCII whitespace; it is optional around operators and
  parentheses, and ``-`` may be followed by whitespace.
* Not supported from AIP-160: bare global restrictions (``"foo"`` alone),
  function calls, ``*`` wildcards and composite values (``a = (1 OR 2)``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

# Hostile input must not cost much: the text is bounded, and so is the nesting
# (each level is a handful of Python frames, so 64 stays far below the
# interpreter's recursion limit).
MAX_LENGTH = 4096
MAX_DEPTH = 64

# In the order error messages list them.
OPERATORS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=", ":")
# Longest first, so "<=" is not read as "<" followed by a value "=...".
_OPERATORS_LONGEST_FIRST = tuple(sorted(OPERATORS, key=len, reverse=True))
KINDS = frozenset({"string", "enum", "timestamp", "number"})
_KEYWORDS = ("AND", "OR", "NOT")

_WHITESPACE = frozenset(" \t\r\n\f\v")
_NAME_START = frozenset(string.ascii_letters + "_")
# Characters that continue a word: a keyword must not be followed by one of
# these, so "ANDROID" and "NOT.x" are names, not keywords.
_WORD_CHARS = _NAME_START | frozenset(string.digits + ".")
# What ends a bare value. ':' and '-' are allowed inside one, because
# timestamps (2024-01-01T00:00:00+02:00) and negative numbers need them.
_BARE_STOP = _WHITESPACE | frozenset("()\"'=<>!")
_QUOTES = frozenset("\"'")  # a set, not a str: "" (peek at the end) is in every str
_ESCAPABLE = frozenset("\"'\\")

_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_RELATIVE_RE = re.compile(r"now(?:[ \t\r\n\f\v]*([+-])[ \t\r\n\f\v]*([0-9]{1,9})([smhdw]))?(?=[ \t\r\n\f\v()]|$)")
_DANGLING_SIGN_RE = re.compile(r"[ \t\r\n\f\v]*[+-]")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_WORD_RE = re.compile(r"[A-Za-z0-9_.]+")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
# RFC 3339 date-time: a full date, a full time and a mandatory offset.
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class FilterError(ValueError):
    """A filter that cannot be parsed or is not allowed.

    ``position`` is the 0-based character offset of the problem in the filter
    text, ``message`` says what is wrong.
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position

    def __reduce__(self) -> tuple[type[FilterError], tuple[str, int]]:
        # The default reduce would call FilterError(str(self)): keep it picklable.
        return (type(self), (self.message, self.position))


@dataclass(frozen=True)
class RelativeTime:
    """``now`` plus ``offset_seconds`` (negative: in the past), resolved when the filter runs."""

    offset_seconds: int
    text: str  # as written, for messages and for string fields

    def at(self, now_micros: int) -> int:
        """The instant in microseconds since the epoch, ``now_micros`` being now."""
        return now_micros + self.offset_seconds * 1_000_000


Value = str | int | float | bool | datetime | RelativeTime


@dataclass(frozen=True)
class Comparison:
    """``field op value``. ``validate`` replaces timestamp strings by datetimes."""

    field: str
    op: str
    value: Value
    quoted: bool
    # Where the field name starts. It is for error messages only, so it takes
    # no part in equality: `a=1` and ` a = 1` are the same filter.
    # dataclasses.field: inside the class body `field` is the attribute above.
    position: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True)
class And:
    terms: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    terms: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    term: Node


Node = Comparison | And | Or | Not


# --------------------------------------------------------------------------- parsing


def parse(text: str) -> Node | None:
    """The tree of ``text``, or None for an empty (or whitespace-only) filter."""
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is too long ({len(text)} characters; the limit is {MAX_LENGTH})", MAX_LENGTH)
    return _Parser(text).parse_filter()


def _combine(kind: type[And] | type[Or], terms: list[Node]) -> Node:
    """``kind`` of ``terms``, flattened: And(a, And(b, c)) is And(a, b, c), And(a) is a."""
    flat: list[Node] = []
    for term in terms:
        if isinstance(term, kind):
            flat.extend(term.terms)
        else:
            flat.append(term)
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


class _Parser:
    """Recursive descent straight over the text.

    There is no separate tokenizer because what a character means depends on
    where it is: after an operator, ``2024-01-01T00:00:00Z`` or ``-5`` is one
    value, while before a field ``-`` negates and ``:`` is an operator.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # ---- grammar rules

    def parse_filter(self) -> Node | None:
        self.skip_whitespace()
        if self.at_end():
            return None
        node = self.parse_expression(after=None)
        self.skip_whitespace()
        # parse_sequence stops only at the end, at ')' or before AND (which
        # parse_expression consumes), so anything left is a stray ')'.
        if not self.at_end():
            raise FilterError("unmatched ')'", self.pos)
        return node

    def parse_expression(self, after: str | None) -> Node:
        sequences = [self.parse_sequence(after)]
        while True:
            self.skip_whitespace()
            if self.keyword() != "AND":
                break
            self.pos += len("AND")
            sequences.append(self.parse_sequence("AND"))
        return _combine(And, sequences)

    def parse_sequence(self, after: str | None) -> Node:
        factors = [self.parse_factor(after)]
        while True:
            self.skip_whitespace()
            if self.at_end() or self.peek() == ")" or self.keyword() == "AND":
                break
            if not self.at_term_start():
                raise FilterError(f"unexpected {self.describe()}", self.pos)
            # Juxtaposition: `a = 1 b = 2` is `a = 1 AND b = 2`.
            factors.append(self.parse_factor(None))
        return _combine(And, factors)

    def parse_factor(self, after: str | None) -> Node:
        terms = [self.parse_term(after)]
        while True:
            self.skip_whitespace()
            if self.keyword() != "OR":
                break
            self.pos += len("OR")
            terms.append(self.parse_term("OR"))
        return _combine(Or, terms)

    def parse_term(self, after: str | None) -> Node:
        """A negation, a parenthesised expression or a comparison.

        ``after`` names the token before this term, so that a missing term is
        reported as "expected a comparison after 'AND'".
        """
        self.skip_whitespace()
        start = self.pos
        keyword = self.keyword()
        if keyword == "NOT" or self.peek() == "-":
            token = keyword or "-"
            self.enter(start)
            self.pos += len(token)
            inner = self.parse_term(token)
            self.depth -= 1
            return Not(inner)
        if self.peek() == "(":
            self.enter(start)
            self.pos += 1
            inner = self.parse_expression("(")
            self.skip_whitespace()
            if self.at_end():
                raise FilterError(f"expected ')' to close the '(' at position {start}, found end of input", self.pos)
            self.pos += 1  # parse_expression only stops at the end or at ')'
            self.depth -= 1
            return inner
        if keyword is None and self.peek() in _NAME_START:
            return self.parse_comparison()
        context = f" after '{after}'" if after else ""
        raise FilterError(f"expected a comparison{context}, found {self.describe()}", self.pos)

    def parse_comparison(self) -> Comparison:
        start = self.pos
        name = self.read_field()
        self.skip_whitespace()
        op = self.read_operator(name)
        self.skip_whitespace()
        value, quoted = self.read_value(op)
        return Comparison(name, op, value, quoted, start)

    # ---- lexical pieces

    def read_field(self) -> str:
        match = _FIELD_RE.match(self.text, self.pos)
        assert match is not None  # the caller saw a name start
        self.pos = match.end()
        if self.peek() == ".":
            raise FilterError(f"expected a name after '.' in field '{match.group()}.'", self.pos + 1)
        return match.group()

    def read_operator(self, name: str) -> str:
        for op in _OPERATORS_LONGEST_FIRST:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise FilterError(f"expected an operator after field '{name}', found {self.describe()}", self.pos)

    def read_value(self, op: str) -> tuple[str | int | float | bool | RelativeTime, bool]:
        if self.peek() in _QUOTES:
            return self.read_string(), True
        start = self.pos
        relative = _RELATIVE_RE.match(self.text, start)
        if relative is not None:
            self.pos = relative.end()
            sign, amount, unit = relative.groups()
            if sign is None and _DANGLING_SIGN_RE.match(self.text, self.pos):
                raise FilterError("expected a duration such as 30d, 12h or 2w after 'now' and its sign", self.pos)
            offset = 0 if sign is None else int(amount) * _UNIT_SECONDS[unit] * (-1 if sign == "-" else 1)
            return RelativeTime(offset, relative.group()), False
        while not self.at_end() and self.text[self.pos] not in _BARE_STOP:
            self.pos += 1
        word = self.text[start : self.pos]
        if not word or word in _KEYWORDS:
            self.pos = start
            raise FilterError(f"expected a value after '{op}', found {self.describe()}", start)
        return self.convert_bare(word, start), False

    def read_string(self) -> str:
        start = self.pos
        quote = self.text[start]
        self.pos += 1
        chars: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if not escaped:
                    break  # a backslash at the very end escapes nothing: unterminated
                if escaped not in _ESCAPABLE:
                    # Reject rather than guess: "\n" may mean newline to the
                    # user, and silently keeping the backslash would not match.
                    raise FilterError(
                        f"unsupported escape '\\{escaped}' in string; only \\\", \\' and \\\\ are allowed", self.pos
                    )
                chars.append(escaped)
                self.pos += 2
            else:
                chars.append(char)
                self.pos += 1
        raise FilterError("unterminated string", start)

    @staticmethod
    def convert_bare(word: str, position: int) -> str | int | float | bool:
        if word in ("true", "false"):
            return word == "true"
        if _INT_RE.fullmatch(word):
            return int(word)  # at most MAX_LENGTH digits: under Python's int/str limit
        if _FLOAT_RE.fullmatch(word):
            number = float(word)
            if not math.isfinite(number):
                raise FilterError(f"number '{word}' is out of range", position)
            return number
        return word

    # ---- cursor helpers

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        """The current character, or "" at the end (which is in no character set)."""
        return self.text[self.pos : self.pos + 1]

    def skip_whitespace(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def keyword(self) -> str | None:
        """The keyword at the cursor, if a whole word there is one."""
        for keyword in _KEYWORDS:
            end = self.pos + len(keyword)
            if self.text.startswith(keyword, self.pos) and self.text[end : end + 1] not in _WORD_CHARS:
                return keyword
        return None

    def at_term_start(self) -> bool:
        keyword = self.keyword()
        if keyword is not None:
            return keyword == "NOT"
        return self.peek() in ("(", "-") or self.peek() in _NAME_START

    def enter(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"filter is nested too deeply (the limit is {MAX_DEPTH} levels)", position)

    def describe(self) -> str:
        """The token at the cursor, for "found ..." in error messages."""
        if self.at_end():
            return "end of input"
        keyword = self.keyword()
        if keyword is not None:
            return f"keyword '{keyword}'"
        word = _WORD_RE.match(self.text, self.pos)
        if word is not None:
            text = word.group()
            return f"'{text[:30]}...'" if len(text) > 30 else f"'{text}'"
        for op in _OPERATORS_LONGEST_FIRST:
            if self.text.startswith(op, self.pos):
                return f"'{op}'"
        char = self.text[self.pos]
        return f"'{char}'" if char.isprintable() else repr(char)


def comparisons(node: Node | None) -> Iterator[Comparison]:
    """Every comparison in ``node``, left to right (none for an empty filter)."""
    if node is None:
        return
    if isinstance(node, Comparison):
        yield node
    elif isinstance(node, Not):
        yield from comparisons(node.term)
    else:
        for term in node.terms:
            yield from comparisons(term)


def conjuncts(node: Node | None) -> tuple[Node, ...]:
    """The terms that must all hold: ``a AND b`` -> (a, b), ``a`` -> (a,), empty -> ().

    A query planner can pick one of them to drive a query (an index) and check the rest.
    """
    if node is None:
        return ()
    return node.terms if isinstance(node, And) else (node,)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class FieldSpec:
    """A field a filter may use: which operators, and what kind of value.

    Kinds: "string" (a string value; a bare number must be quoted), "enum" (one
    of ``enum_values``), "timestamp" (RFC 3339 with 'Z' or an offset, converted
    to an aware datetime), "number" (an unquoted int or float).
    """

    name: str
    ops: frozenset[str]
    kind: str
    enum_values: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # A bad spec is a programming error, found when the service module is
        # imported; it must not surface to clients as a FilterError.
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if unknown := set(self.ops) - set(OPERATORS):
            raise ValueError(f"field {self.name!r}: unknown operators {sorted(unknown)}")
        if (self.kind == "enum") != bool(self.enum_values):
            raise ValueError(f"field {self.name!r}: enum_values must be given exactly for kind 'enum'")


def validate(node: Node | None, fields: Mapping[str, FieldSpec]) -> Node | None:
    """``node`` checked against ``fields`` (keyed by field name), with values converted.

    Raises FilterError at the position of the first offending comparison.
    """
    if node is None:
        return None
    return _validate_node(node, fields)


def _validate_node(node: Node, fields: Mapping[str, FieldSpec]) -> Node:
    if isinstance(node, Comparison):
        return _validate_comparison(node, fields)
    if isinstance(node, And):
        return And(tuple(_validate_node(term, fields) for term in node.terms))
    if isinstance(node, Or):
        return Or(tuple(_validate_node(term, fields) for term in node.terms))
    if isinstance(node, Not):
        return Not(_validate_node(node.term, fields))
    raise TypeError(f"not a filter node: {node!r}")


def _validate_comparison(comparison: Comparison, fields: Mapping[str, FieldSpec]) -> Comparison:
    spec = fields.get(comparison.field)
    if spec is None and "." in comparison.field:
        spec = fields.get(comparison.field.split(".", 1)[0] + ".*")
    if spec is None:
        known = ", ".join(sorted(fields)) or "(none)"
        raise FilterError(f"unknown field '{comparison.field}'; known fields: {known}", comparison.position)
    if comparison.op not in spec.ops:
        supported = ", ".join(op for op in sorted(spec.ops, key=OPERATORS.index)) or "(none)"
        raise FilterError(
            f"operator '{comparison.op}' is not supported for field '{comparison.field}'; supported: {supported}",
            comparison.position,
        )
    value = _convert_value(comparison, spec)
    return comparison if value is comparison.value else replace(comparison, value=value)


def _convert_value(comparison: Comparison, spec: FieldSpec) -> Value:
    value, name = comparison.value, comparison.field
    shown = _show(value)
    if isinstance(value, RelativeTime) and spec.kind in ("string", "enum"):
        value = value.text
    if spec.kind == "string":
        if not isinstance(value, str):
            # Converting back to text would be lossy (`007` parsed as 7), so ask for quotes.
            raise FilterError(
                f"field '{name}' expects a string, got {shown}; quote it to compare as text", comparison.position
            )
        return value
    if spec.kind == "enum":
        if not isinstance(value, str) or value not in spec.enum_values:
            allowed = ", ".join(sorted(spec.enum_values))
            raise FilterError(
                f"invalid value {shown} for field '{name}'; expected one of: {allowed}", comparison.position
            )
        return value
    if spec.kind == "number":
        if isinstance(value, bool | RelativeTime) or not isinstance(value, int | float) or comparison.quoted:
            raise FilterError(f"field '{name}' expects a number, got {shown}", comparison.position)
        return value
    # timestamp
    if (isinstance(value, datetime) and value.tzinfo is not None) or isinstance(value, RelativeTime):
        return value  # already converted (validate() may run twice), or measured from now when evaluated
    timestamp = _parse_timestamp(value)
    if timestamp is None:
        raise FilterError(
            f"invalid timestamp {shown} for field '{name}'; expected RFC 3339 such as 2024-01-01T00:00:00Z",
            comparison.position,
        )
    return timestamp


def _parse_timestamp(value: Value) -> datetime | None:
    """An aware datetime for an RFC 3339 string, else None.

    The regex comes first because fromisoformat also takes forms RFC 3339
    does not (a bare date, no offset, the basic format without dashes).
    """
    if not isinstance(value, str) or not _RFC3339_RE.fullmatch(value):
        return None
    try:
        # fromisoformat reads 'Z' since 3.11, but not the lower-case 't' and 'z' that RFC 3339 allows.
        return datetime.fromisoformat(value.upper())
    except ValueError:  # out-of-range parts: month 13, Feb 30, offset +24:00
        return None


def _show(value: Value) -> str:
    """``value`` as the user could have written it: strings in quotes, the rest bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, RelativeTime):
        return value.text
    return f"'{value}'"
