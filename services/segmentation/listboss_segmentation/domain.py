"""The segmentation rules, free of protobuf and of the database.

Automatic segmentations are platform-defined: one per event type, adding one
status tag and removing the tags that status supersedes. They exist for every
product, cannot be changed, and are not stored: they are the table
:data:`AUTOMATIC_SEGMENTATIONS` below.

Custom segmentations are the producer's: an event type, an optional condition
(:mod:`listboss_segmentation.conditions`), the contact data to send and the
tags to add and remove. Each segmentation, automatic or custom, compiles once
into a :class:`Rule`; :func:`evaluate` runs a product's rules on one event (the
only path that decides tag operations) and :func:`explain` tells what one
segmentation would do with an event (TestSegmentation's dry run).

Events are read by attribute (``event.person.email``), so the canonical
protobuf Event is evaluated as it arrives without this module importing it.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from listboss_segmentation import conditions as cond


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


# A display name (a registered product's, a custom segmentation's): at most this many characters.
MAX_DISPLAY_NAME = 200
# Characters of the product's name a tag's display name carries: a registered product's whole
# name. Every tag operation of a change carries the display name, so its size is bounded here
# rather than by whatever an event's product name may hold (docs/api.md, "SegmentationService limits").
MAX_TAG_PRODUCT_NAME = MAX_DISPLAY_NAME


def check_display_name(name: str) -> str | None:
    if not name.strip():
        return "is required"
    if len(name) > MAX_DISPLAY_NAME:
        return f"must be at most {MAX_DISPLAY_NAME} characters"
    return None


def tag_display_name(tag_key: str, product_name: str) -> str:
    """The display name of a product's tag: the label and the product's name (cut with an
    ellipsis past :data:`MAX_TAG_PRODUCT_NAME` characters)."""
    label = TAG_LABELS.get(tag_key, tag_key)
    if len(product_name) > MAX_TAG_PRODUCT_NAME:
        product_name = product_name[: MAX_TAG_PRODUCT_NAME - 1] + "\u2026"
    return f"{label} - {product_name}" if product_name else label


# --------------------------------------------------------------------------- contact data


def _name(event) -> str:
    person = event.person
    return person.name or " ".join(part for part in (person.first_name, person.last_name) if part)


def _address(event) -> dict[str, str]:
    address = event.person.address
    parts = ("street", "number", "complement", "neighborhood", "city", "state", "zip_code", "country", "country_code")
    return {f"address.{part}": getattr(address, part) for part in parts}


# What a segmentation may send: name -> the entries it contributes (empty ones are dropped).
CONTACT_DATA: dict[str, Callable[[Any], dict[str, str]]] = {
    "email": lambda e: {"email": e.person.email},
    "name": lambda e: {"name": _name(e)},
    "first_name": lambda e: {"first_name": e.person.first_name},
    "last_name": lambda e: {"last_name": e.person.last_name},
    "phone": lambda e: {"phone": e.person.phone},
    "country": lambda e: {"country_code": e.person.country_code},
    "address": _address,
    "document": lambda e: {"document": e.person.document, "document_type": e.person.document_type},
    "product_name": lambda e: {"product_name": e.product.name},
    "transaction": lambda e: {"transaction": e.purchase.transaction},
    "offer_code": lambda e: {"offer_code": e.purchase.offer_code},
    "subscription_plan": lambda e: {"subscription_plan": e.subscription.plan.name or e.subscription.plan.id},
}
# Automatic segmentations send what capture needs: who the person is.
AUTOMATIC_CONTACT_DATA = ("email", "name")


def contact_data(choices: Iterable[str], event) -> dict[str, str]:
    found: dict[str, str] = {}
    for choice in choices:
        for key, value in CONTACT_DATA[choice](event).items():
            if value:
                found[key] = value
    return found


# --------------------------------------------------------------------------- custom segmentations

ACTIVE, INACTIVE = "ACTIVE", "INACTIVE"
PROVIDERS = ("SEND",)
MAX_TAG_KEY = 64
MAX_TAGS = 20
_TAG_KEY = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SEGMENTATION_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
AUTOMATIC_PREFIX = "auto-"


@dataclass(frozen=True)
class CustomSegmentation:
    producer: str
    product: str
    segmentation_id: str
    display_name: str
    provider: str
    event_type: str
    condition: cond.Condition | None
    contact_data: tuple[str, ...]
    add_tags: tuple[str, ...]
    remove_tags: tuple[str, ...]
    state: str = INACTIVE
    revision: int = 1
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    @property
    def etag(self) -> str:
        return f"r{self.revision}"


def new_segmentation_id() -> str:
    """The id given to a segmentation created without one."""
    return f"seg-{uuid.uuid4().hex[:12]}"


def check_segmentation_id(segmentation_id: str) -> str | None:
    if not _SEGMENTATION_ID.match(segmentation_id):
        return "must be 1-63 lower-case letters, digits or '-', starting with a letter"
    if segmentation_id.startswith(AUTOMATIC_PREFIX):
        return f"ids starting with {AUTOMATIC_PREFIX!r} are reserved for automatic segmentations"
    return None


def check_tag_key(key: str) -> str | None:
    if not key:
        return "must not be empty"
    if len(key) > MAX_TAG_KEY:
        return f"must be at most {MAX_TAG_KEY} characters"
    if not _TAG_KEY.match(key):
        return "must be a slug: lower-case letters and digits in words joined by single '-' (e.g. billet-buyers)"
    if key in RESERVED_TAG_KEYS:
        return f"{key!r} belongs to the automatic segmentations; choose another key"
    return None


def check_segmentation(segmentation: CustomSegmentation) -> list[tuple[str, str]]:
    """Every problem of a custom segmentation, as (field path, description)."""
    problems: list[tuple[str, str]] = []
    if problem := check_display_name(segmentation.display_name):
        problems.append(("display_name", problem))
    if segmentation.provider not in PROVIDERS:
        problems.append(("provider", "must be PROVIDER_SEND"))
    event_type_known = segmentation.event_type in cond.EVENT_TYPES
    if not event_type_known:
        problems.append(("event_type", "must be a known event type (DescribeEventTypes lists them)"))
    if not segmentation.add_tags and not segmentation.remove_tags:
        problems.append(("action", "must add or remove at least one tag"))
    for kind in ("add_tags", "remove_tags"):
        keys = getattr(segmentation, kind)
        if len(keys) > MAX_TAGS:
            problems.append((f"action.{kind}", f"at most {MAX_TAGS} tags"))
        for index, key in enumerate(keys):
            problem = check_tag_key(key)
            if problem is None and key in keys[:index]:
                problem = "is listed twice"
            if problem is None and kind == "remove_tags" and key in segmentation.add_tags:
                problem = "is also in add_tags: a segmentation cannot add and remove the same tag"
            if problem:
                problems.append((f"action.{kind}[{index}]", problem))
    for index, choice in enumerate(segmentation.contact_data):
        if choice not in CONTACT_DATA:
            problems.append((f"contact_data[{index}]", "must be a known CONTACT_DATA_* value"))
        elif choice in segmentation.contact_data[:index]:
            problems.append((f"contact_data[{index}]", "is listed twice"))
    condition = segmentation.condition
    if condition is not None:
        found = cond.clauses(condition)
        if cond.depth(condition) > cond.MAX_DEPTH:
            problems.append(("condition", f"nested deeper than {cond.MAX_DEPTH} levels"))
        if len(found) > cond.MAX_CLAUSES:
            problems.append(("condition", f"more than {cond.MAX_CLAUSES} clauses"))
        if event_type_known:
            for path, clause in found:
                for sub, description in cond.check_clause(clause, segmentation.event_type):
                    problems.append((f"condition.{path}.{sub}", description))
    return problems


def normalized(segmentation: CustomSegmentation) -> CustomSegmentation:
    """The segmentation with its condition's values normalized (codes upper-cased),
    as it is stored. Only for a segmentation without problems."""
    return replace(
        segmentation, display_name=segmentation.display_name.strip(), condition=_normalize(segmentation.condition)
    )


def _normalize(condition: cond.Condition | None) -> cond.Condition | None:
    if condition is None:
        return None
    if isinstance(condition, cond.Clause):
        field_def = cond.FIELDS[condition.field]
        return cond.Clause(
            condition.field, condition.operator, tuple(cond.normalize_value(field_def, v) for v in condition.values)
        )
    if isinstance(condition, cond.Not):
        return cond.Not(_normalize(condition.term))  # type: ignore[arg-type]
    return type(condition)(tuple(_normalize(t) for t in condition.terms))  # type: ignore[misc]


# --------------------------------------------------------------------------- limits on ACTIVE ones

# Every ACTIVE custom segmentation is evaluated for each of its product's events of its type,
# and the tag operations of all that fire travel in the event's one ContactChange, which must fit
# in one bus message (nats-server's max_payload, 1 MiB). Past these limits activation (or an
# update of an ACTIVE one) is FAILED_PRECONDITION. docs/api.md "SegmentationService limits" has the
# arithmetic; services/segmentation/tests/test_limits.py builds the worst case and measures it.
MAX_ACTIVE_SEGMENTATIONS = 100  # per product
MAX_ACTIVE_TAG_OPERATIONS = 100  # per product and event type: tags added + removed, summed
ACTIVE_SEGMENTATIONS_LIMIT = "ACTIVE_SEGMENTATIONS_LIMIT"
ACTIVE_TAG_OPERATIONS_LIMIT = "ACTIVE_TAG_OPERATIONS_LIMIT"


@dataclass(frozen=True)
class LimitExceeded:
    """Why a segmentation may not be ACTIVE beside the product's other ACTIVE ones."""

    reason: str
    limit: int
    # What the product would hold with the segmentation ACTIVE.
    total: int
    # Says "{product}" where the caller puts the product's name.
    message: str


def tag_operation_count(segmentation: CustomSegmentation) -> int:
    return len(segmentation.add_tags) + len(segmentation.remove_tags)


def check_active_limits(active: Sequence[CustomSegmentation], candidate: CustomSegmentation) -> LimitExceeded | None:
    """Whether ``candidate`` (as it would be stored) may be ACTIVE beside ``active``, the
    product's ACTIVE custom segmentations (``candidate`` among them or not)."""
    others = [s for s in active if s.segmentation_id != candidate.segmentation_id]
    if len(others) + 1 > MAX_ACTIVE_SEGMENTATIONS:
        return LimitExceeded(
            ACTIVE_SEGMENTATIONS_LIMIT,
            MAX_ACTIVE_SEGMENTATIONS,
            len(others) + 1,
            f"a product may have at most {MAX_ACTIVE_SEGMENTATIONS} ACTIVE custom segmentations and "
            f"{{product}} already has {len(others)}; deactivate or delete one first",
        )
    same_type = sum(tag_operation_count(s) for s in others if s.event_type == candidate.event_type)
    total = same_type + tag_operation_count(candidate)
    if total > MAX_ACTIVE_TAG_OPERATIONS:
        return LimitExceeded(
            ACTIVE_TAG_OPERATIONS_LIMIT,
            MAX_ACTIVE_TAG_OPERATIONS,
            total,
            f"the ACTIVE custom segmentations of one product and event type may add and remove at most "
            f"{MAX_ACTIVE_TAG_OPERATIONS} tags in all (they can all fire for one event, and the change "
            f"carrying their tag operations must fit in one bus message); for {candidate.event_type} on "
            f"{{product}} the "
            f"others already use {same_type} and this one has {tag_operation_count(candidate)}: "
            "deactivate one or use fewer tags",
        )
    return None


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A segmentation ready for evaluation: what it tests, and what it does when it fires
    (its tag operations are fixed, so they are built once)."""

    segmentation_id: str
    event_type: str
    automatic: bool
    condition: cond.Condition | None
    add_tags: tuple[str, ...]
    remove_tags: tuple[str, ...]
    contact_data: tuple[str, ...]
    operations: tuple[TagOperation, ...] = ()

    def __post_init__(self) -> None:
        if not self.operations:
            # Removals before additions, so a reader of the operations sees the status move
            # (the contacts store decides by occurrence time, not by list order).
            operations = [TagOperation(TagAction.REMOVE, key, self.segmentation_id) for key in self.remove_tags]
            operations += [TagOperation(TagAction.ADD, key, self.segmentation_id) for key in self.add_tags]
            object.__setattr__(self, "operations", tuple(operations))


@dataclass(frozen=True)
class RuleSet:
    """The rules of one product and event type, compiled together: each field any of
    them tests is read once per event."""

    rules: tuple[Rule, ...]
    predicates: tuple[cond.SlotPredicate | None, ...]
    readers: tuple[Callable[[Any], Any], ...]


def rule_set(rules: Sequence[Rule]) -> RuleSet:
    slots = cond.slots_for(rule.condition for rule in rules)
    predicates = tuple(None if rule.condition is None else cond.compile_slots(rule.condition, slots) for rule in rules)
    return RuleSet(tuple(rules), predicates, cond.readers(slots))


@dataclass
class Decision:
    operations: list[TagOperation] = field(default_factory=list)
    fired: list[Rule] = field(default_factory=list)
    contact_data: dict[str, str] = field(default_factory=dict)


def automatic_rule(segmentation: AutomaticSegmentation) -> Rule:
    return Rule(
        segmentation.id,
        segmentation.event_type,
        True,
        None,
        (segmentation.add_tag,),
        segmentation.remove_tags,
        AUTOMATIC_CONTACT_DATA,
    )


def custom_rule(segmentation: CustomSegmentation) -> Rule:
    return Rule(
        segmentation.segmentation_id,
        segmentation.event_type,
        False,
        segmentation.condition,
        segmentation.add_tags,
        segmentation.remove_tags,
        segmentation.contact_data,
    )


def rule_for(segmentation: AutomaticSegmentation | CustomSegmentation) -> Rule:
    if isinstance(segmentation, AutomaticSegmentation):
        return automatic_rule(segmentation)
    return custom_rule(segmentation)


AUTOMATIC_RULES: dict[str, Rule] = {s.event_type: automatic_rule(s) for s in AUTOMATIC_SEGMENTATIONS}

RuleIndex = dict[str, RuleSet]
#: The rules of an event type nothing listens to.
NO_RULES = RuleSet((), (), ())


def rule_index(custom: Sequence[CustomSegmentation]) -> RuleIndex:
    """A product's rules by event type: the automatic one first, then the ACTIVE
    custom ones in creation order."""
    by_event: dict[str, list[Rule]] = {t: [r] for t, r in AUTOMATIC_RULES.items()}
    ordered = sorted(custom, key=lambda s: (s.create_time or dt.datetime.min, s.segmentation_id))
    for segmentation in ordered:
        if segmentation.state == ACTIVE:
            by_event.setdefault(segmentation.event_type, []).append(custom_rule(segmentation))
    return {event_type: rule_set(rules) for event_type, rules in by_event.items()}


AUTOMATIC_INDEX: RuleIndex = rule_index(())

#: The rules of an event that names no product (its product was missing or unusable in the
#: webhook): none, automatic or custom. Tags and segmentations belong to a product (a tag id is
#: "{product}.{key}"), so such an event captures its contact (lead capture's contact data) and
#: changes no tag; nor is a product registered for it.
NO_PRODUCT_INDEX: RuleIndex = {}


def names_a_product(event) -> bool:
    """Whether ``event`` names a product its product's rules and tags can apply to."""
    return bool(event.product.id)


def fire(rules: RuleSet, event) -> list[Rule]:
    """The rules that fire for ``event``: the hot path."""
    values = [read(event) for read in rules.readers]
    return [
        rule
        for rule, predicate in zip(rules.rules, rules.predicates, strict=True)
        if predicate is None or predicate(values)
    ]


def decision(fired: Sequence[Rule], event) -> Decision:
    """The tag operations (per segmentation, removals first) and the contact data of the fired rules."""
    result = Decision(fired=list(fired))
    for rule in fired:
        result.operations.extend(rule.operations)
    result.contact_data = contact_data(contact_data_choices(fired), event)
    return result


def contact_data_choices(fired: Sequence[Rule]) -> tuple[str, ...]:
    """The contact data the fired rules send, each once. Lead capture is automatic for every
    event that names a person (even of a type with no automatic segmentation, such as
    WEBINAR_ATTENDANCE): it sends what the automatic ones choose."""
    choices: dict[str, None] = dict.fromkeys(AUTOMATIC_CONTACT_DATA)
    for rule in fired:
        choices.update(dict.fromkeys(rule.contact_data))
    return tuple(choices)


def evaluate(index: RuleIndex, event_type: str, event) -> Decision:
    return decision(fire(index.get(event_type, NO_RULES), event), event)


# --------------------------------------------------------------------------- explanation


@dataclass(frozen=True)
class Explanation:
    """What one segmentation would do with one event, clause by clause."""

    rule: Rule
    matched: bool
    event_type_matched: bool
    # Every clause, not only those a short-circuit would reach.
    clauses: list[cond.ClauseOutcome]
    # What it would send: its own choices only (lead capture's are not its doing).
    contact_data: dict[str, str]
    text: str


def explain(segmentation: AutomaticSegmentation | CustomSegmentation, event_type: str, event) -> Explanation:
    """The dry run of ``segmentation`` on ``event`` (of type ``event_type``)."""
    rule = rule_for(segmentation)
    type_matched = event_type == rule.event_type
    result, outcomes = cond.explain(rule.condition, event)
    matched = type_matched and result
    data: dict[str, str] = {}
    if matched:
        data = contact_data(rule.contact_data, event)
        did = [*(f"add {k}" for k in rule.add_tags), *(f"remove {k}" for k in rule.remove_tags)]
        text = "matches: it would " + ", ".join(did)
    elif not type_matched:
        text = f"does not match: the event is {event_type}, the segmentation is for {rule.event_type}"
    else:
        failed = [o.path for o in outcomes if not o.result]
        text = "does not match: the condition is false" + (f" (false clauses: {', '.join(failed)})" if failed else "")
    return Explanation(rule, matched, type_matched, outcomes, data, text)
