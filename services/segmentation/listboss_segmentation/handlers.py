"""The segmentation service's use cases: plain functions over domain values and a unit of work.

Each takes the unit of work first (:class:`~listboss_segmentation.unit_of_work.UnitOfWork`
or a fake with the same methods), runs in one transaction and returns domain values or
raises a :class:`Refused`, which the entrypoint turns into its protocol's error. They
import neither protobuf nor SQLAlchemy. Segmentations given to them are valid
(:func:`domain.check_segmentation` found nothing) and normalized: the entrypoint
validates as it translates, so every problem of a request is named at once.

A use case that changes what fires for a product's events records the product in
``uow.changed_products``; the caller announces it to every replica after the commit.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from listboss_segmentation import domain

if TYPE_CHECKING:
    from listboss_segmentation.storage import BackfillRecord, ProductRecord
    from listboss_segmentation.unit_of_work import UnitOfWork

Segmentation = domain.AutomaticSegmentation | domain.CustomSegmentation

# --------------------------------------------------------------------------- refusals


class Refused(Exception):
    """Why a use case did not do what was asked, and about what: the resource's ids,
    (producer, product), (…, segmentation) or (…, segmentation, backfill)."""

    def __init__(self, *ids: str):
        super().__init__(*ids)
        self.ids = ids


class NotFound(Refused):
    pass


class AutomaticSegmentationLocked(Refused):
    """Automatic segmentations are platform-defined: never changed, deleted or backfilled."""


class SegmentationExists(Refused):
    pass


class ConcurrentChange(Refused):
    """The stored segmentation changed since the caller read it."""


class EtagMismatch(Refused):
    def __init__(self, stored: domain.CustomSegmentation, etag: str):
        super().__init__(*_ids(stored))
        self.etag, self.current = etag, stored.etag


class ActiveLimitExceeded(Refused):
    def __init__(self, segmentation: domain.CustomSegmentation, problem: domain.LimitExceeded):
        super().__init__(*_ids(segmentation))
        self.problem = problem


def _ids(segmentation: domain.CustomSegmentation) -> tuple[str, str, str]:
    return segmentation.producer, segmentation.product, segmentation.segmentation_id


# --------------------------------------------------------------------------- products


def register_product(uow: UnitOfWork, producer: str, product_id: str, display_name: str, kind: int) -> ProductRecord:
    """Creates the product or renames it: registration wins over what events said."""
    with uow:
        record = uow.register_product(producer, product_id, display_name, kind)
        uow.commit()
    return record


def record_products_seen(uow: UnitOfWork, seen: list[tuple[str, str, str, int]]) -> None:
    """Records products first seen in events, (producer, product_id, name, kind); known ones stay as they are."""
    with uow:
        uow.add_products_seen(seen)
        uow.commit()


def get_product(uow: UnitOfWork, producer: str, product_id: str) -> ProductRecord:
    with uow:
        return _product(uow, producer, product_id)


def list_products(uow: UnitOfWork, producer: str, after: str | None, limit: int) -> list[ProductRecord]:
    with uow:
        return uow.products(producer, after, limit)


def _product(uow: UnitOfWork, producer: str, product_id: str) -> ProductRecord:
    record = uow.product(producer, product_id)
    if record is None:
        raise NotFound(producer, product_id)
    return record


# --------------------------------------------------------------------------- reading segmentations


def get_segmentation(
    uow: UnitOfWork, producer: str, product_id: str, segmentation_id: str
) -> tuple[ProductRecord, Segmentation]:
    """The product and one of its segmentations, automatic or custom."""
    with uow:
        product = _product(uow, producer, product_id)
        automatic = domain.AUTOMATIC_BY_ID.get(segmentation_id)
        if automatic is not None:
            return product, automatic
        custom = uow.segmentation(producer, product_id, segmentation_id)
        if custom is None:
            raise NotFound(producer, product_id, segmentation_id)
        return product, custom


def list_segmentations(uow: UnitOfWork, producer: str, product_id: str) -> tuple[ProductRecord, list[Segmentation]]:
    """The product and all its segmentations: the automatic ones in the table's order, then
    the custom ones in creation order."""
    with uow:
        product = _product(uow, producer, product_id)
        return product, [*domain.AUTOMATIC_SEGMENTATIONS, *uow.segmentations(producer, product_id)]


def custom_segmentation(
    uow: UnitOfWork, producer: str, product_id: str, segmentation_id: str, etag: str = ""
) -> domain.CustomSegmentation:
    """The custom segmentation a caller means to change (or backfill): automatic ones are
    locked, and a non-empty ``etag`` must be the stored one's."""
    _, segmentation = get_segmentation(uow, producer, product_id, segmentation_id)
    if isinstance(segmentation, domain.AutomaticSegmentation):
        raise AutomaticSegmentationLocked(producer, product_id, segmentation_id)
    if etag and etag != segmentation.etag:
        raise EtagMismatch(segmentation, etag)
    return segmentation


# --------------------------------------------------------------------------- changing segmentations


def create_segmentation(
    uow: UnitOfWork, segmentation: domain.CustomSegmentation, request_id: str
) -> domain.CustomSegmentation:
    """Stores a new INACTIVE segmentation. A ``request_id`` seen before returns what that
    request created, so a retry is safe."""
    with uow:
        if request_id:
            earlier = uow.segmentation_by_request(segmentation.producer, segmentation.product, request_id)
            if earlier is not None:
                return earlier
        created = uow.add_segmentation(segmentation, request_id)
        if created is None:
            if request_id:  # a concurrent retry of the same request won the race
                earlier = uow.segmentation_by_request(segmentation.producer, segmentation.product, request_id)
                if earlier is not None:
                    return earlier
            raise SegmentationExists(*_ids(segmentation))
        uow.commit()
    # Inactive segmentations do nothing: no rule changes to announce.
    return created


def update_segmentation(
    uow: UnitOfWork, current: domain.CustomSegmentation, updated: domain.CustomSegmentation
) -> domain.CustomSegmentation:
    """Saves ``updated`` over ``current`` (as read). An ACTIVE one must stay within the
    limits with its new tags or event type."""
    with uow:
        if current.state == domain.ACTIVE:
            _check_active_limits(uow, updated)
        saved = _save(uow, updated, current.revision)
        if current.state == domain.ACTIVE:
            uow.changed_products.append((saved.producer, saved.product))
        uow.commit()
    return saved


def set_state(uow: UnitOfWork, current: domain.CustomSegmentation, state: str) -> domain.CustomSegmentation:
    """Activates or deactivates ``current`` (as read); activation must stay within the limits."""
    if current.state == state:
        return current  # already there: nothing changes
    changed = replace(current, state=state)
    with uow:
        if state == domain.ACTIVE:
            _check_active_limits(uow, changed)
        saved = _save(uow, changed, current.revision)
        uow.changed_products.append((saved.producer, saved.product))
        uow.commit()
    return saved


def delete_segmentation(uow: UnitOfWork, current: domain.CustomSegmentation) -> None:
    with uow:
        if not uow.delete_segmentation(current):
            raise ConcurrentChange(*_ids(current))
        uow.changed_products.append((current.producer, current.product))
        uow.commit()


def _check_active_limits(uow: UnitOfWork, segmentation: domain.CustomSegmentation) -> None:
    """Refuses ``segmentation`` as ACTIVE when the product's ACTIVE ones would pass the limits.
    The product stays locked from the count to the commit, so two concurrent activations
    cannot both take the last place."""
    uow.lock_product(segmentation.producer, segmentation.product)
    active = uow.segmentations(segmentation.producer, segmentation.product, state=domain.ACTIVE)
    problem = domain.check_active_limits(active, segmentation)
    if problem is not None:
        raise ActiveLimitExceeded(segmentation, problem)


def _save(uow: UnitOfWork, segmentation: domain.CustomSegmentation, expected_revision: int):
    saved = uow.save_segmentation(segmentation, expected_revision)
    if saved is None:
        raise ConcurrentChange(*_ids(segmentation))
    return saved


# --------------------------------------------------------------------------- backfills


def create_backfill(
    uow: UnitOfWork, segmentation: domain.CustomSegmentation, owner: str = "", lease_seconds: float = 0.0
) -> BackfillRecord:
    """A new RUNNING backfill of ``segmentation``, leased to the replica ``owner`` that starts it."""
    with uow:
        record = uow.add_backfill(segmentation, uuid.uuid4().hex[:16], owner, lease_seconds)
        uow.commit()
    return record


def get_backfill(
    uow: UnitOfWork, producer: str, product_id: str, segmentation_id: str, backfill_id: str
) -> BackfillRecord:
    with uow:
        record = uow.backfill(producer, product_id, segmentation_id, backfill_id)
    if record is None:
        raise NotFound(producer, product_id, segmentation_id, backfill_id)
    return record
