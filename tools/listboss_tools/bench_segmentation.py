"""Benchmark (not a test): the cost of a product's ACTIVE custom segmentations on one event.

    python -m listboss_tools.bench_segmentation [--rules N ...] [--seconds 2]

Two rule sets, each of ``--rules`` rules (default: the limit, domain.MAX_ACTIVE_SEGMENTATIONS)
all listening to the event's type (the worst case: rules of other types are never looked at):

- *typical*: conditions of the usual kinds (a clause, an AND of two, an IN list, a price with
  currency, a NOT of an OR), half of them match; one tag each;
- *all fire*: the same rules without conditions, so every one fires and the change carries
  every tag operation the limits allow (MAX_ACTIVE_TAG_OPERATIONS for one event type).

For each: the time per event of the evaluation alone (compiled predicates), of the whole
decision, of building the ContactChange protobuf the consumer publishes, and of serializing it
as publish_changes does (its size for packing, then the bytes); the rate that makes for one
core, and the bytes published per event. ``--rules 1000`` shows what the limit now refuses.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from listboss.events.v1 import event_pb2
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain
from listboss_segmentation.consumer import change_for
from listboss_segmentation.messages import ChangeEncoder, clear_contact_data, event_type_name


def sample_event() -> event_pb2.Event:
    event = event_pb2.Event(
        id="evt-1",
        producer="bench",
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email="ana@example.com", name="Ana", phone="+55 11 9999", country_code="BR"),
        purchase=event_pb2.Purchase(
            payment_type="BILLET",
            offer_code="X",
            coupon_code="OFF10",
            installments=3,
            recurrence_number=1,
            checkout_country_code="BR",
            price=event_pb2.Money(currency_code="BRL", value=297.0),
        ),
    )
    event.occur_time.FromSeconds(1_700_000_000)
    return event


def _condition(index: int) -> cond.Condition:
    hit = index % 2 == 0  # half of the rules match the sample event
    kind = index % 5
    payment = "BILLET" if hit else "PIX"
    if kind == 0:
        return cond.Clause("payment_type", cond.EQUALS, (payment,))
    if kind == 1:
        return cond.AllOf(
            (cond.Clause("payment_type", cond.EQUALS, (payment,)), cond.Clause("offer_code", cond.EQUALS, ("X",)))
        )
    if kind == 2:
        return cond.Clause("offer_code", cond.IN, ("X" if hit else "Y", "Z", "W"))
    if kind == 3:
        return cond.Clause("price", cond.GREATER_OR_EQUALS, (cond.Money("BRL", 100.0 if hit else 1000.0),))
    return cond.Not(
        cond.AnyOf(
            (
                cond.Clause("installments", cond.GREATER_THAN, (12.0,)),
                cond.Clause("coupon_code", cond.EQUALS, ("OFF10" if not hit else "NONE",)),
            )
        )
    )


def custom_segmentations(count: int) -> list[domain.CustomSegmentation]:
    return [
        domain.CustomSegmentation(
            "bench",
            "42",
            f"rule-{index:03d}",
            f"Rule {index}",
            "SEND",
            "PURCHASE_APPROVED",
            _condition(index),
            ("phone",),
            (f"tag-{index:03d}",),
            (),
            state=domain.ACTIVE,
        )
        for index in range(count)
    ]


def all_firing(count: int) -> list[domain.CustomSegmentation]:
    """``count`` rules without conditions, sharing out the tag operations the limits allow
    (at least one each)."""
    budget = max(domain.MAX_ACTIVE_TAG_OPERATIONS, count)
    rules = []
    for index, rule in enumerate(custom_segmentations(count)):
        operations = budget // count + (1 if index < budget % count else 0)
        keys = tuple(f"tag-{index:03d}-{n:02d}" for n in range(operations))
        rules.append(
            replace(
                rule,
                condition=None,
                add_tags=keys[: domain.MAX_TAGS],
                remove_tags=keys[domain.MAX_TAGS : 2 * domain.MAX_TAGS],
            )
        )
    return rules


def per_event(function, seconds: float) -> float:
    """Microseconds per call, the best of five rounds."""
    rounds = []
    calls = 1
    while True:  # calibrate to about seconds/5 per round
        started = time.perf_counter()
        for _ in range(calls):
            function()
        elapsed = time.perf_counter() - started
        if elapsed > seconds / 5:
            break
        calls *= 2
    rounds.append(elapsed / calls)
    for _ in range(4):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        rounds.append((time.perf_counter() - started) / calls)
    return min(rounds) * 1e6


def serialized(change) -> bytes:
    change.ByteSize()  # publish_changes sizes each change to pack it
    return change.SerializeToString()


def measure(title: str, rules: list[domain.CustomSegmentation], seconds: float) -> None:
    index = domain.rule_index(rules)
    event = sample_event()
    fired = domain.fire(index["PURCHASE_APPROVED"], event)
    change = change_for(event, index)
    print(
        f"{title}: {len(rules)} ACTIVE custom segmentations (+1 automatic) on one PURCHASE_APPROVED event; "
        f"{len(fired) - 1} custom ones fire, {len(change.tag_operations)} tag operations"
    )
    evaluate = per_event(lambda: domain.fire(index[event_type_name(event.type)], event), seconds)
    decide = per_event(lambda: domain.evaluate(index, "PURCHASE_APPROVED", event), seconds)
    whole = per_event(lambda: change_for(event, index), seconds)
    published = per_event(lambda: serialized(change_for(event, index)), seconds)
    print(f"  evaluate the conditions (compiled):                  {evaluate:8.1f} µs per event")
    print(f"  + tag operations and contact data (domain):          {decide:8.1f} µs per event")
    print(f"  + the ContactChange protobuf:                        {whole:8.1f} µs per event")
    print(
        f"  + serialized as publish_changes does:                {published:8.1f} µs per event"
        f"  = {1e6 / published:,.0f} events/s on one core"
    )
    print(f"  published per event: {len(serialized(change)):,} bytes")
    encoder = ChangeEncoder()
    encoded = per_event(lambda: encoded_change(encoder, index, event), seconds)
    print(
        f"  as the consumer publishes it (ChangeEncoder):        {encoded:8.1f} µs per event"
        f"  = {1e6 / encoded:,.0f} events/s on one core"
    )


def encoded_change(encoder: ChangeEncoder, index: domain.RuleIndex, event) -> bytes:
    """The consumer's path for a clear event: evaluate, the cached outcome, the event's bytes
    and the contact data, concatenated."""
    fired = domain.fire(index[event_type_name(event.type)], event)
    outcome = encoder.outcome(event.producer, event.product.id, event.product.name, fired)
    chosen = domain.contact_data(outcome.contact_data, event)
    return encoder.change(event.SerializeToString(), outcome, clear_contact_data(chosen))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rules",
        type=int,
        nargs="+",
        default=[domain.MAX_ACTIVE_SEGMENTATIONS],
        help="rule counts to measure (default: the limit, %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    print(
        f"limits: {domain.MAX_ACTIVE_SEGMENTATIONS} ACTIVE custom segmentations per product, "
        f"{domain.MAX_ACTIVE_TAG_OPERATIONS} tag operations per product and event type"
    )
    for count in args.rules:
        over = (
            " (over the limits: refused at activation)"
            if (count > domain.MAX_ACTIVE_SEGMENTATIONS or count > domain.MAX_ACTIVE_TAG_OPERATIONS)
            else ""
        )
        measure(f"typical{over}", custom_segmentations(count), args.seconds)
        measure(f"all fire{over}", all_firing(count), args.seconds)


if __name__ == "__main__":
    main()
