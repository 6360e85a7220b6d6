"""Sealed personal data: the module alone, then its key store on a real nats-server."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus, personal_data
from listboss_common.config import ConfigError
from listboss_common.personal_data import Keyring, PersonKey, PersonKeys

KEY = PersonKey("k" * 32, 7, bytes(range(32)))


def _event(event_id: str = "evt-1", producer: str = "alice", email: str = "ana@example.com") -> event_pb2.Event:
    return event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="0042"),
        person=event_pb2.Person(
            email=email,
            name="Ana Silva",
            phone="+5511999990000",
            document="12345678900",
            address=event_pb2.Address(street="Rua das Flores", city="Recife"),
        ),
    )


def _sealed(event_id: str = "evt-1", producer: str = "alice") -> event_pb2.Event:
    event = _event(event_id, producer)
    personal_data.seal_person(event, KEY)
    return event


# --------------------------------------------------------------------------- sealing


def test_a_sealed_person_opens_to_the_same_person():
    event = _event()
    person = event_pb2.Person()
    person.CopyFrom(event.person)
    personal_data.seal_person(event, KEY)
    assert not event.HasField("person")
    assert event.sealed_person.key_id == KEY.key_id
    assert event.sealed_person.key_sequence == KEY.sequence
    assert len(event.sealed_person.nonce) == 12
    assert b"ana@example.com" not in event.SerializeToString()
    assert personal_data.unseal_person(event, KEY) == person


def test_every_sealing_takes_a_new_nonce():
    first, second = _sealed(), _sealed()
    assert first.sealed_person.nonce != second.sealed_person.nonce
    assert first.sealed_person.ciphertext != second.sealed_person.ciphertext


@pytest.mark.parametrize("field, value", [("id", "evt-2"), ("producer", "bob")])
def test_a_sealed_person_moved_to_another_event_does_not_open(field, value):
    event = _sealed()
    setattr(event, field, value)
    with pytest.raises(bus.PoisonMessage, match="does not authenticate"):
        personal_data.unseal_person(event, KEY)


def test_a_tampered_ciphertext_does_not_open():
    event = _sealed()
    damaged = bytearray(event.sealed_person.ciphertext)
    damaged[3] ^= 0x01
    event.sealed_person.ciphertext = bytes(damaged)
    with pytest.raises(bus.PoisonMessage):
        personal_data.unseal_person(event, KEY)


def test_sealed_contact_data_opens_only_on_its_own_event():
    change = contact_change_pb2.ContactChange(event=_sealed(), contact_data={"name": "Ana Silva", "phone": "+55119"})
    personal_data.seal_contact_data(change, KEY)
    assert not change.contact_data
    assert b"Ana Silva" not in change.SerializeToString()
    assert personal_data.unseal_contact_data(change, KEY) == {"name": "Ana Silva", "phone": "+55119"}
    # Sealed as contact data, it cannot pass for the event's person (associated data differ).
    change.event.sealed_person.CopyFrom(change.sealed_contact_data)
    with pytest.raises(bus.PoisonMessage):
        personal_data.unseal_person(change.event, KEY)


def test_contact_data_sealed_as_bytes_is_what_deterministic_serialization_seals():
    data = {"phone": "+55119", "name": "Ana Silva", "address.city": "São Paulo", "long": "x" * 300}
    holder = contact_change_pb2.ContactChange(contact_data=data)
    assert personal_data.contact_data_plaintext(data) == holder.SerializeToString(deterministic=True)
    nonce = personal_data.nonces(1)[0]
    sealed = event_pb2.SealedData.FromString(personal_data.sealed_contact_data(KEY, data, "alice", "evt-1", nonce))
    assert (sealed.key_id, sealed.key_sequence, sealed.nonce) == (KEY.key_id, KEY.sequence, nonce)
    change = contact_change_pb2.ContactChange(event=_sealed(), sealed_contact_data=sealed)
    assert personal_data.unseal_contact_data(change, KEY) == data


def test_a_batch_of_nonces_holds_distinct_nonces_of_the_right_size():
    drawn = personal_data.nonces(1000)
    assert len(set(drawn)) == 1000 and {len(nonce) for nonce in drawn} == {personal_data.NONCE_BYTES}


# --------------------------------------------------------------------------- LISTBOSS_DATA_KEY


@pytest.mark.parametrize(
    "value, complaint",
    [
        (None, "must be set"),
        ("", "must be set"),
        ("not base64 at all!", "not base64url"),
        (base64.urlsafe_b64encode(bytes(16)).decode(), "32 bytes, not 16"),
        (base64.urlsafe_b64encode(bytes(32)).decode(), "well-known"),
        (personal_data.EXAMPLE_DATA_KEY, "well-known"),
        (personal_data.EXAMPLE_DATA_KEY + "=", "well-known"),
    ],
)
def test_a_missing_or_weak_data_key_is_refused(value, complaint):
    with pytest.raises(ConfigError, match=complaint) as refused:
        Keyring.from_env({} if value is None else {"LISTBOSS_DATA_KEY": value})
    assert "LISTBOSS_DATA_KEY" in str(refused.value)


def test_the_example_in_the_docs_is_the_refused_one():
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert personal_data.EXAMPLE_DATA_KEY in operations


def test_a_generated_data_key_is_accepted_with_or_without_padding():
    value = personal_data.new_data_key()
    assert len(personal_data.parse_data_key(value)) == 32
    assert personal_data.parse_data_key(value + "=") == personal_data.parse_data_key(value)


def test_key_ids_are_keyed_by_the_data_key_and_ignore_the_emails_spelling():
    one = Keyring(personal_data.parse_data_key(personal_data.new_data_key()))
    other = Keyring(personal_data.parse_data_key(personal_data.new_data_key()))
    key_id = one.key_id("alice", "ana@example.com")
    assert len(key_id) == 32 and int(key_id, 16) >= 0
    assert one.key_id("alice", "  Ana@Example.COM ") == key_id
    assert other.key_id("alice", "ana@example.com") != key_id
    assert one.key_id("bob", "ana@example.com") != key_id


def test_a_wrapped_key_opens_only_under_the_same_data_key_and_id():
    one = Keyring(personal_data.parse_data_key(personal_data.new_data_key()))
    other = Keyring(personal_data.parse_data_key(personal_data.new_data_key()))
    wrapped = one.wrap("a" * 32, KEY.key)
    assert KEY.key not in wrapped
    assert one.unwrap("a" * 32, wrapped) == KEY.key
    with pytest.raises(personal_data.KeyUnreadable):
        other.unwrap("a" * 32, wrapped)
    with pytest.raises(personal_data.KeyUnreadable):
        one.unwrap("b" * 32, wrapped)


# --------------------------------------------------------------------------- the key store on JetStream


async def test_concurrent_creators_of_one_person_end_with_one_key(person_keys: PersonKeys, js, nc):
    # Twenty stores (as if twenty replicas, each with an empty cache) ask at once.
    stores = [PersonKeys(js, person_keys.keyring) for _ in range(20)]
    found = await asyncio.gather(*(store.for_people([("alice", "ana@example.com")]) for store in stores))
    keys = {result[("alice", "ana@example.com")] for result in found}
    assert len(keys) == 1
    info = await js.stream_info(bus.PERSON_KEYS.name)
    assert info.state.messages == 1


async def test_concurrent_calls_about_one_new_person_share_one_creation(person_keys: PersonKeys, js):
    # Four calls in flight on one replica (as a batch client sends them) name the same new person.
    people = [("alice", "new@example.com"), ("alice", "other@example.com")]
    creations = []
    create = person_keys._get_or_create
    person_keys._get_or_create = lambda producer, key_id: creations.append(key_id) or create(producer, key_id)
    found = await asyncio.gather(*(person_keys.for_people(people) for _ in range(4)))
    assert len({result[people[0]] for result in found}) == 1
    assert len(creations) == 2  # one round trip per person, not one per call
    info = await js.stream_info(bus.PERSON_KEYS.name)
    assert info.state.messages == 2


async def test_a_destroyed_key_reads_as_erased_and_a_new_one_is_another_generation(person_keys: PersonKeys, js):
    event = _event()
    (key,) = (await person_keys.for_people([("alice", event.person.email)])).values()
    personal_data.seal_person(event, key)
    assert [opened.person.email for opened in await personal_data.open_events(person_keys, [event])] == [
        "ana@example.com"
    ]

    await person_keys.destroy("alice", "ana@example.com")
    # A replica that never saw the broadcast and has nothing cached reads the store.
    elsewhere = PersonKeys(js, person_keys.keyring)
    for store in (person_keys, elsewhere):
        assert await personal_data.open_events(store, [event]) == [personal_data.ERASED]
    assert await person_keys.destroy("alice", "ana@example.com") == key.key_id  # again: nothing left to do

    (again,) = (await person_keys.for_people([("alice", "ana@example.com")])).values()
    assert again.key_id == key.key_id and again.sequence > key.sequence and again.key != key.key
    # The old generation stays erased even now that the person has a key again.
    assert await personal_data.open_events(elsewhere, [event]) == [personal_data.ERASED]


async def test_destroying_a_key_tells_every_replicas_cache(person_keys: PersonKeys, nc, js):
    other = PersonKeys(js, person_keys.keyring)
    await other.listen(nc)
    (key,) = (await other.for_people([("alice", "ana@example.com")])).values()
    assert other._cached(key.key_id) is not None
    await person_keys.destroy("alice", "ana@example.com")

    async def forgotten() -> None:
        for _ in range(100):
            if other._cached(key.key_id) is None:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the other replica kept the destroyed key")

    await forgotten()


async def test_the_key_message_is_erased_on_disk(person_keys: PersonKeys, js, nats_server):
    (key,) = (await person_keys.for_people([("alice", "ana@example.com")])).values()
    wrapped = (await js.get_last_msg(bus.PERSON_KEYS.name, personal_data.key_subject("alice", key.key_id))).data

    def stored() -> bytes:
        return b"".join(path.read_bytes() for path in Path(nats_server.store_dir).rglob("*.blk"))

    assert wrapped in stored()  # the check below looks where the key was written
    await person_keys.destroy("alice", "ana@example.com")
    assert wrapped not in stored()


async def test_the_stream_keeps_one_message_per_person(js, person_keys):
    info = await js.stream_info(bus.PERSON_KEYS.name)
    assert info.config.max_msgs_per_subject == 1
    assert info.config.allow_direct is True
    assert info.config.max_age in (None, 0)


async def test_a_replica_reads_many_keys_in_batched_round_trips(person_keys: PersonKeys, js):
    # 300 people, sealed by one replica; another, with nothing cached, opens them all at once.
    events = [_event(f"evt-{n}", email=f"person{n}@example.com") for n in range(300)]
    keys = await person_keys.for_people([("alice", event.person.email) for event in events])
    for event in events:
        personal_data.seal_person(event, keys[("alice", event.person.email)])
    await person_keys.destroy("alice", "person7@example.com")

    elsewhere = PersonKeys(js, person_keys.keyring)
    requests: list[int] = []
    last_messages = elsewhere._last_messages

    async def counted(subjects):
        requests.append(len(subjects))
        return await last_messages(subjects)

    elsewhere._last_messages = counted  # type: ignore[method-assign]
    opened = await personal_data.open_events(elsewhere, events)
    assert requests == [256, 44]  # two round trips, not one per person
    assert [o.person.email if o is not personal_data.ERASED else None for o in opened] == [
        None if n == 7 else f"person{n}@example.com" for n in range(300)
    ]
