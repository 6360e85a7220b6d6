"""The segmentation rules, free of protobuf and of the database.

Automatic segmentations are platform-defined: one per event type, adding one
status tag and removing the tags that status supersedes (DESIGN.md's table).
They exist for every product, cannot be changed, and are not stored: they are
this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TagAction(Enum):
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class AutomaticSegmentation:
    event_type: str
    add_tag: str
    remove_tags: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        # Stable, readable ids: producers/p/products/x/segmentations/auto-purchase-approved.
        return f"auto-{self.add_tag}"

    @property
    def display_name(self) -> str:
        return f"{TAG_LABELS[self.add_tag]} (automatic)"


@dataclass(frozen=True)
class TagOperation:
    action: TagAction
    tag_key: str
    segmentation_id: str


AUTOMATIC_SEGMENTATIONS: tuple[AutomaticSegmentation, ...] = (
    AutomaticSegmentation("PURCHASE_OUT_OF_SHOPPING_CART", "cart-abandoned"),
    AutomaticSegmentation("PURCHASE_BILLET_PRINTED", "billet-printed", ("cart-abandoned",)),
    AutomaticSegmentation(
        "PURCHASE_APPROVED",
        "purchase-approved",
        ("cart-abandoned", "billet-printed", "purchase-canceled", "purchase-expired", "purchase-delayed"),
    ),
    AutomaticSegmentation("PURCHASE_COMPLETE", "purchase-complete"),
    AutomaticSegmentation("PURCHASE_CANCELED", "purchase-canceled", ("billet-printed",)),
    AutomaticSegmentation("PURCHASE_EXPIRED", "purchase-expired", ("billet-printed",)),
    AutomaticSegmentation("PURCHASE_DELAYED", "purchase-delayed"),
    AutomaticSegmentation("PURCHASE_PROTEST", "refund-requested"),
    AutomaticSegmentation(
        "PURCHASE_REFUNDED", "purchase-refunded", ("purchase-approved", "purchase-complete", "refund-requested")
    ),
    AutomaticSegmentation("PURCHASE_CHARGEBACK", "purchase-chargeback", ("purchase-approved", "purchase-complete")),
    AutomaticSegmentation("SUBSCRIPTION_CANCELLATION", "subscription-canceled"),
    AutomaticSegmentation("SWITCH_PLAN", "plan-switched"),
    AutomaticSegmentation("UPDATE_SUBSCRIPTION_CHARGE_DATE", "charge-date-changed"),
    AutomaticSegmentation("CLUB_FIRST_ACCESS", "members-area-accessed"),
    AutomaticSegmentation("CLUB_MODULE_COMPLETED", "module-completed"),
)

TAG_LABELS: dict[str, str] = {
    "cart-abandoned": "Cart abandoned",
    "billet-printed": "Billet printed",
    "purchase-approved": "Purchase approved",
    "purchase-complete": "Purchase complete",
    "purchase-canceled": "Purchase canceled",
    "purchase-expired": "Purchase expired",
    "purchase-delayed": "Purchase delayed",
    "refund-requested": "Refund requested",
    "purchase-refunded": "Purchase refunded",
    "purchase-chargeback": "Purchase chargeback",
    "subscription-canceled": "Subscription canceled",
    "plan-switched": "Plan switched",
    "charge-date-changed": "Charge date changed",
    "members-area-accessed": "Members area accessed",
    "module-completed": "Module completed",
}

AUTOMATIC_BY_EVENT: dict[str, AutomaticSegmentation] = {s.event_type: s for s in AUTOMATIC_SEGMENTATIONS}
AUTOMATIC_BY_ID: dict[str, AutomaticSegmentation] = {s.id: s for s in AUTOMATIC_SEGMENTATIONS}
# Keys custom tags may not take: they belong to the automatic segmentations.
RESERVED_TAG_KEYS = frozenset(TAG_LABELS)


def tag_display_name(tag_key: str, product_name: str) -> str:
    """The display name of a product's tag: the label and the product's name."""
    label = TAG_LABELS.get(tag_key, tag_key)
    return f"{label} - {product_name}" if product_name else label


def decide(event_type: str) -> tuple[list[TagOperation], list[str]]:
    """The tag operations for one event and the ids of the segmentations that fired.

    Removals come before the addition so a reader of the operations sees the
    status move; the contacts store decides by occurrence time, not list order.
    """
    segmentation = AUTOMATIC_BY_EVENT.get(event_type)
    if segmentation is None:
        return [], []
    operations = [TagOperation(TagAction.REMOVE, key, segmentation.id) for key in segmentation.remove_tags]
    operations.append(TagOperation(TagAction.ADD, segmentation.add_tag, segmentation.id))
    return operations, [segmentation.id]
