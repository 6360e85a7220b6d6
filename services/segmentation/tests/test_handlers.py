"""The use cases (handlers.py) on a fake unit of work: fast, no database. What they store,
what they refuse, what they announce to the other replicas, and that a refusal commits
nothing. (The real unit of work is exercised through gRPC in the other test modules.)"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import replace

import pytest

from listboss_segmentation import domain, handlers


class FakeUnitOfWork:
    """The methods of SqlUnitOfWork over dicts; a transaction works on a copy that
    ``commit`` keeps."""

    def __init__(self):
        self.committed = {"products": {}, "segmentations": {}, "requests": {}, "backfills": {}}
        self.changed_products: list[tuple[str, str]] = []
        self.commits = 0
        self.clock = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def __enter__(self):
        self.data = copy.deepcopy(self.committed)
        return self

    def __exit__(self, *exc_info):
        del self.data

    def commit(self):
        self.committed = self.data
        self.commits += 1

    def _tick(self) -> dt.datetime:
        self.clock += dt.timedelta(seconds=1)
        return self.clock

    def product(self, producer, product_id):
        return self.data["products"].get((producer, product_id))

    def lock_product(self, producer, product_id):
        pass

    def segmentation(self, producer, product_id, segmentation_id):
        return self.data["segmentations"].get((producer, product_id, segmentation_id))

    def segmentations(self, producer, product_id, state=None):
        found = [
            s
            for (p, i, _), s in self.data["segmentations"].items()
            if (p, i) == (producer, product_id) and state in (None, s.state)
        ]
        return sorted(found, key=lambda s: s.create_time)

    def segmentation_by_request(self, producer, product_id, request_id):
        key = self.data["requests"].get((producer, product_id, request_id))
        return None if key is None else self.data["segmentations"].get(key)

    def add_segmentation(self, segmentation, request_id):
        key = (segmentation.producer, segmentation.product, segmentation.segmentation_id)
        if key in self.data["segmentations"]:
            return None
        stamp = self._tick()
        stored = replace(segmentation, state=domain.INACTIVE, revision=1, create_time=stamp, update_time=stamp)
        self.data["segmentations"][key] = stored
        if request_id:
            self.data["requests"][(segmentation.producer, segmentation.product, request_id)] = key
        return stored

    def save_segmentation(self, segmentation, expected_revision):
        key = (segmentation.producer, segmentation.product, segmentation.segmentation_id)
        stored = self.data["segmentations"].get(key)
        if stored is None or stored.revision != expected_revision:
            return None
        saved = replace(
            segmentation, revision=expected_revision + 1, create_time=stored.create_time, update_time=self._tick()
        )
        self.data["segmentations"][key] = saved
        return saved

    def delete_segmentation(self, segmentation):
        key = (segmentation.producer, segmentation.product, segmentation.segmentation_id)
        stored = self.data["segmentations"].get(key)
        if stored is None or stored.revision != segmentation.revision:
            return False
        del self.data["segmentations"][key]
        return True

    def stored(self, segmentation_id: str) -> domain.CustomSegmentation | None:
        return self.committed["segmentations"].get(("alice", "42", segmentation_id))


@pytest.fixture
def uow() -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    uow.committed["products"][("alice", "42")] = "the product"
    return uow


def vip(segmentation_id: str = "vip", add: int = 1) -> domain.CustomSegmentation:
    return domain.CustomSegmentation(
        "alice",
        "42",
        segmentation_id,
        "VIP",
        "SEND",
        "PURCHASE_APPROVED",
        None,
        (),
        tuple(f"{segmentation_id}-{n}" for n in range(add)),
        (),
    )


def created(uow, segmentation_id: str = "vip", add: int = 1, active: bool = False) -> domain.CustomSegmentation:
    segmentation = handlers.create_segmentation(uow, vip(segmentation_id, add), "")
    if active:
        segmentation = handlers.set_state(uow, segmentation, domain.ACTIVE)
    return segmentation


def test_create_stores_an_inactive_segmentation_and_announces_nothing(uow):
    segmentation = handlers.create_segmentation(uow, vip(), "req-1")
    assert segmentation.state == domain.INACTIVE and uow.stored("vip") == segmentation
    assert uow.changed_products == []


def test_a_retried_create_returns_what_the_first_created(uow):
    first = handlers.create_segmentation(uow, vip(), "req-1")
    commits = uow.commits
    assert handlers.create_segmentation(uow, vip(), "req-1") == first
    # Another id under the same request id: still the first one, nothing written.
    assert handlers.create_segmentation(uow, vip("other"), "req-1") == first
    assert uow.commits == commits and uow.stored("other") is None


def test_a_taken_id_is_refused(uow):
    handlers.create_segmentation(uow, vip(), "req-1")
    with pytest.raises(handlers.SegmentationExists) as refused:
        handlers.create_segmentation(uow, vip(), "req-2")
    assert refused.value.ids == ("alice", "42", "vip")


def test_automatic_segmentations_are_locked_and_etags_guard_changes(uow):
    with pytest.raises(handlers.AutomaticSegmentationLocked):
        handlers.custom_segmentation(uow, "alice", "42", "auto-purchase-approved")
    segmentation = created(uow)
    assert handlers.custom_segmentation(uow, "alice", "42", "vip", segmentation.etag) == segmentation
    with pytest.raises(handlers.EtagMismatch) as refused:
        handlers.custom_segmentation(uow, "alice", "42", "vip", "r0")
    assert (refused.value.etag, refused.value.current) == ("r0", segmentation.etag)
    with pytest.raises(handlers.NotFound) as missing:
        handlers.custom_segmentation(uow, "alice", "42", "nope")
    assert missing.value.ids == ("alice", "42", "nope")
    with pytest.raises(handlers.NotFound) as missing:
        handlers.get_segmentation(uow, "alice", "404", "auto-purchase-approved")
    assert missing.value.ids == ("alice", "404")  # the product, even for an automatic one


def test_activation_announces_and_a_second_one_changes_nothing(uow):
    segmentation = created(uow)
    active = handlers.set_state(uow, segmentation, domain.ACTIVE)
    assert active.state == domain.ACTIVE and uow.stored("vip") == active
    assert uow.changed_products == [("alice", "42")]
    commits = uow.commits
    assert handlers.set_state(uow, active, domain.ACTIVE) is active
    assert uow.commits == commits and uow.changed_products == [("alice", "42")]


def test_activation_past_the_limits_is_refused_and_commits_nothing(uow, monkeypatch):
    monkeypatch.setattr(domain, "MAX_ACTIVE_SEGMENTATIONS", 2)
    created(uow, "a", active=True)
    created(uow, "b", active=True)
    third = created(uow, "c")
    uow.changed_products.clear()
    with pytest.raises(handlers.ActiveLimitExceeded) as refused:
        handlers.set_state(uow, third, domain.ACTIVE)
    assert refused.value.ids == ("alice", "42", "c")
    assert (refused.value.problem.reason, refused.value.problem.total) == ("ACTIVE_SEGMENTATIONS_LIMIT", 3)
    assert uow.stored("c").state == domain.INACTIVE and uow.changed_products == []


def test_an_update_of_an_active_one_stays_within_the_limits_and_announces(uow):
    active = created(uow, "a", add=20, active=True)
    for segmentation_id in ("b", "c", "d", "e"):  # 100 tag operations in all: the limit
        created(uow, segmentation_id, add=20, active=True)
    uow.changed_products.clear()
    renamed = handlers.update_segmentation(uow, active, replace(active, display_name="Renamed"))
    assert uow.stored("a").display_name == "Renamed" and uow.changed_products == [("alice", "42")]
    more = replace(renamed, remove_tags=("old",))
    with pytest.raises(handlers.ActiveLimitExceeded):
        handlers.update_segmentation(uow, renamed, more)
    assert uow.stored("a") == renamed


def test_an_update_of_an_inactive_one_announces_nothing(uow):
    segmentation = created(uow)
    handlers.update_segmentation(uow, segmentation, replace(segmentation, display_name="Renamed"))
    assert uow.stored("vip").display_name == "Renamed" and uow.changed_products == []


def test_changes_from_a_stale_read_are_refused(uow):
    stale = created(uow)
    handlers.update_segmentation(uow, stale, replace(stale, display_name="Renamed"))
    for change in (
        lambda: handlers.update_segmentation(uow, stale, replace(stale, display_name="Late")),
        lambda: handlers.set_state(uow, stale, domain.ACTIVE),
        lambda: handlers.delete_segmentation(uow, stale),
    ):
        with pytest.raises(handlers.ConcurrentChange):
            change()
    assert uow.stored("vip").display_name == "Renamed" and uow.changed_products == []


def test_delete_announces_even_an_inactive_one(uow):
    segmentation = created(uow)
    handlers.delete_segmentation(uow, segmentation)
    assert uow.stored("vip") is None and uow.changed_products == [("alice", "42")]


def test_listing_puts_the_automatic_ones_first_then_custom_ones_in_creation_order(uow):
    for segmentation_id in ("b", "a"):
        created(uow, segmentation_id)
    product, listed = handlers.list_segmentations(uow, "alice", "42")
    assert product == "the product"
    assert listed[: len(domain.AUTOMATIC_SEGMENTATIONS)] == list(domain.AUTOMATIC_SEGMENTATIONS)
    assert [s.segmentation_id for s in listed[len(domain.AUTOMATIC_SEGMENTATIONS) :]] == ["b", "a"]
