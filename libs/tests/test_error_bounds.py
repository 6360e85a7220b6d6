"""The bounds every error keeps (listboss_common.errors): quoted values, messages, violations and
the whole status stay small whatever the request held; resource names name their limits."""

from __future__ import annotations

import pytest

from listboss_common.errors import (
    MAX_DESCRIPTION_CHARACTERS,
    MAX_MESSAGE_CHARACTERS,
    MAX_STATUS_BYTES,
    MAX_VIOLATIONS,
    FieldViolation,
    InvalidArgument,
    not_found,
    quoted,
)
from listboss_common.resources import CONTACT, PRODUCER, SEGMENTATION


def test_a_quoted_value_is_a_short_prefix_and_its_length():
    assert quoted("abc") == "'abc'"
    shown = quoted("x" * 100_000)
    assert shown.startswith("'" + "x" * 40 + "\u2026'") and "100000 characters" in shown
    assert quoted("a\x00b") == "'a\\u0000b'"


def test_every_part_of_an_error_is_bounded():
    huge = "\u00e7" * 100_000
    error = InvalidArgument([FieldViolation(f"f{i}.{huge}", huge) for i in range(1_000)])
    assert len(error.message.encode()) <= MAX_MESSAGE_CHARACTERS
    assert "more field violations" in error.message
    assert 0 < len(error.violations) <= MAX_VIOLATIONS
    assert all(len(v.description) <= MAX_DESCRIPTION_CHARACTERS for v in error.violations)
    assert error.to_status().ByteSize() <= MAX_STATUS_BYTES
    assert len(not_found(huge).metadata["resource"]) <= MAX_DESCRIPTION_CHARACTERS


def test_an_error_within_the_bounds_is_unchanged():
    error = InvalidArgument([FieldViolation("person.email", "required")])
    assert error.message == "person.email: required"
    assert error.violations == (FieldViolation("person.email", "required"),)


@pytest.mark.parametrize(
    ("pattern", "name", "says"),
    [
        (PRODUCER, "producers/" + "a" * 100_000, "at most 138 characters"),
        (CONTACT, "producers/alice/contacts/" + "1" * 129, "the contact id must be at most 128 characters"),
        (SEGMENTATION, "producers/" + "p" * 129 + "/products/1/segmentations/s", "the producer id must be at most 128"),
    ],
)
def test_an_over_long_name_names_the_limit_not_the_value(pattern, name, says):
    with pytest.raises(InvalidArgument) as caught:
        pattern.parse(name, "parent")
    (violation,) = caught.value.violations
    assert violation.field == "parent"
    assert says in violation.description
    assert "a" * 41 not in caught.value.message and "1" * 41 not in caught.value.message
