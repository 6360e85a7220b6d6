"""Benchmark (not a test): the cost of evaluating 100 ACTIVE custom segmentations on one event.

    python -m listboss_tools.bench_segmentation [--rules 100] [--seconds 2]

The rules all listen to the event's type (the worst case: rules of other types
are never looked at) and carry typical conditions: a clause, an AND of two, an
IN list, a price with currency, a NOT of an OR. Half of them match. Prints the
time per event of the evaluation alone (compiled predicates) and of the whole
decision, including building the ContactChange protobuf the consumer publishes.
"""

from __future__ import annotations

import argparse
import time

from listboss.events.v1 import event_pb2
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain
from listboss_segmentation.events import change_for, event_type_name


def sample_event() -> event_pb2.Event:
    event = event_pb2.Event(
        id="evt-1",
        producer="bench",
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email="ana@example.com", name="Ana", phone="+55 11 9999", country_code="BR"),
        purchase=event_pb2.Purchase(
            payment_type="BILLET", offer_code="X", coupon_code="OFF10", installments=3, recurrence_number=1,
            checkout_country_code="BR", price=event_pb2.Money(currency_code="BRL", value=297.0),
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
        return cond.All((cond.Clause("payment_type", cond.EQUALS, (payment,)),
                         cond.Clause("offer_code", cond.EQUALS, ("X",))))
    if kind == 2:
        return cond.Clause("offer_code", cond.IN, ("X" if hit else "Y", "Z", "W"))
    if kind == 3:
        return cond.Clause("price", cond.GREATER_OR_EQUALS, (cond.Money("BRL", 100.0 if hit else 1000.0),))
    return cond.Not(cond.Any((cond.Clause("installments", cond.GREATER_THAN, (12.0,)),
                              cond.Clause("coupon_code", cond.EQUALS, ("OFF10" if not hit else "NONE",)))))


def custom_segmentations(count: int) -> list[domain.CustomSegmentation]:
    return [
        domain.CustomSegmentation(
            "bench", "42", f"rule-{index:03d}", f"Rule {index}", "SEND", "PURCHASE_APPROVED", _condition(index),
            ("phone",), (f"tag-{index:03d}",), (), state=domain.ACTIVE,
        )
        for index in range(count)
    ]


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)

    index = domain.rule_index(custom_segmentations(args.rules))
    event = sample_event()
    rules = index["PURCHASE_APPROVED"]
    fired = domain.fire(rules, event)
    print(f"{args.rules} active custom segmentations (+1 automatic) on one PURCHASE_APPROVED event; "
          f"{len(fired) - 1} custom ones match")
    evaluate = per_event(lambda: domain.fire(index[event_type_name(event.type)], event), args.seconds)
    decide = per_event(lambda: domain.evaluate(index, "PURCHASE_APPROVED", event), args.seconds)
    whole = per_event(lambda: change_for(event, index), args.seconds)
    print(f"  evaluate the conditions (compiled):            {evaluate:8.1f} µs per event")
    print(f"  + tag operations and contact data (domain):    {decide:8.1f} µs per event")
    print(f"  + the ContactChange protobuf (what is published): {whole:5.1f} µs per event")


if __name__ == "__main__":
    main()
