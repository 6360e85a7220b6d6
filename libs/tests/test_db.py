"""The advisory-lock keys: replicas of different releases must derive the same key from
the same lock name, or a rolling start would migrate (or relay) twice at once."""

from __future__ import annotations

import pytest

from listboss_common.db import advisory_lock_key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("listboss_contacts", 4433633321073369288),  # contacts' migration lock
        ("listboss_segmentation", 5495495986293259843),  # segmentation's migration lock
        ("listboss_contacts.outbox_relay", -7372890997406697583),  # the tag-change relay
    ],
)
def test_advisory_lock_keys_do_not_change(name: str, key: int) -> None:
    assert advisory_lock_key(name) == key
