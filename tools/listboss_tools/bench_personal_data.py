"""What sealing persons on the bus costs: CPU microseconds per event.

``python -m listboss_tools.bench_personal_data [--events N] [--persons P]``

Measures, with every person's key already in the cache (the steady state; a miss costs one
JetStream round trip per new person, paid once and in parallel per call):

- ingest: sealing a published event's person (key lookup, AES-GCM, protobuf);
- segmentation: opening the person and sealing the chosen contact data again, over the
  same rule evaluation with a clear person;
- contacts: opening the person and the contact data of a change, over reading a clear one.

CPU time of this process (``time.process_time``), so a figure is what one core spends per event.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import personal_data
from listboss_contacts import messages as contacts_messages
from listboss_ingest.publisher import EventPublisher
from listboss_segmentation.consumer import change_for, decide_sealed


def sample_events(count: int, persons: int) -> list[event_pb2.Event]:
    events = []
    for index in range(count):
        event = event_pb2.Event(
            id=f"evt-{index}",
            producer="bench",
            type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
            product=event_pb2.Product(id="0042", name="Course"),
            person=event_pb2.Person(
                email=f"person-{index % persons}@example.com",
                name="Ana Maria Silva",
                phone="+5511987654321",
                document="98765432100",
                address=event_pb2.Address(street="Rua das Laranjeiras", number="10", city="Recife", state="PE"),
            ),
        )
        event.occur_time.FromSeconds(1_700_000_000 + index)
        events.append(event)
    return events


def cpu_per_item(work: Callable[[], object], items: int) -> float:
    """Microseconds of CPU per item for one run of ``work`` over ``items`` items."""
    started = time.process_time()
    work()
    return (time.process_time() - started) / items * 1e6


def segmentation_figures(clear: list[event_pb2.Event], opened: list[personal_data.Opened], sealed_events) -> tuple:
    """(evaluate a clear event, evaluate with the person opened and the contact data sealed again),
    over the same events, each timed warm."""
    count = len(clear)
    changes: list[contact_change_pb2.ContactChange] = []

    def plain() -> None:
        for event in clear:
            change_for(event)

    def resealing() -> None:
        changes.clear()
        for event, person in zip(sealed_events, opened, strict=True):
            change = decide_sealed(event, person, change_for)
            assert change is not None
            changes.append(change)

    plain()
    resealing()  # warm: rule indexes, protobuf classes
    return cpu_per_item(plain, count), cpu_per_item(resealing, count), changes


def copies(events: list[event_pb2.Event]) -> list[event_pb2.Event]:
    return [event_pb2.Event.FromString(event.SerializeToString()) for event in events]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--persons", type=int, default=2_000)
    args = parser.parse_args(argv)
    count = args.events

    keyring = personal_data.Keyring(personal_data.parse_data_key(personal_data.new_data_key()))
    # No JetStream: every key is put in the cache first, as after the first event of each person.
    keys = personal_data.PersonKeys(None, keyring)  # type: ignore[arg-type]
    for person in range(args.persons):
        email = f"person-{person}@example.com"
        keys._remember(personal_data.PersonKey(keyring.key_id("bench", email), 1, bytes(32)))
    publisher = EventPublisher(None, person_keys=keys)  # type: ignore[arg-type]

    clear = sample_events(count, args.persons)
    sealed = copies(clear)
    seal = cpu_per_item(lambda: asyncio.run(publisher._seal(sealed)), count)
    serialize_clear = cpu_per_item(lambda: [e.SerializeToString() for e in clear], count)
    serialize_sealed = cpu_per_item(lambda: [e.SerializeToString() for e in sealed], count)

    opened: list[personal_data.Opened] = []

    def open_events() -> None:
        opened.extend(asyncio.run(personal_data.open_events(keys, sealed)))

    open_cost = cpu_per_item(open_events, count)
    segment_clear, decide, changes = segmentation_figures(clear, opened, copies(sealed))

    clear_changes = [change_for(event) for event in clear]
    read_clear = cpu_per_item(lambda: contacts_messages.changes_from(clear_changes), count)
    persons: list = []

    def read_sealed() -> None:
        persons.extend(asyncio.run(personal_data.open_changes(keys, changes)))
        contacts_messages.changes_from(changes, persons)

    read_sealed_cost = cpu_per_item(read_sealed, count)

    print(f"{count:,} events, {args.persons:,} persons, keys cached; CPU µs per event")
    print(f"  ingest        seal person                         {seal:7.1f}")
    print(f"                serialize (clear -> sealed)         {serialize_clear:7.1f} -> {serialize_sealed:.1f}")
    print(f"  segmentation  evaluate, clear person              {segment_clear:7.1f}")
    print(f"                open person                         {open_cost:7.1f}")
    print(f"                evaluate + seal contact data        {decide:7.1f}")
    print(f"                added by sealing                    {open_cost + decide - segment_clear:7.1f}")
    print(f"  contacts      read clear change                   {read_clear:7.1f}")
    print(f"                open person and contact data, read  {read_sealed_cost:7.1f}")
    print(f"                added by sealing                    {read_sealed_cost - read_clear:7.1f}")


if __name__ == "__main__":
    main()
