"""Personal data on the bus, sealed with a key per person that erasure destroys.

Events and contact changes stay in JetStream's files long after they are handled, and
erasing a contact from a database cannot reach them. So the person's data never travels
in clear: ingest seals the event's ``Person`` (and segmentation the contact data it
chooses) with AES-256-GCM under a random 256-bit *data key of that person*, and erasure
destroys the key. Every copy of the data (in LISTBOSS_EVENTS, LISTBOSS_CHANGES, dead
letters, backups of them) is then unreadable (crypto-shredding).

- **Keys** live in the stream LISTBOSS_PERSON_KEYS, one per subject
  ``listboss.personkeys.<producer>.<key id>`` (``max_msgs_per_subject=1``). A key is
  stored wrapped (AES-256-GCM) under a key-encryption key derived with HKDF from the
  secret ``LISTBOSS_DATA_KEY``, so NATS's files alone decrypt nothing.
- **Key ids** are HMAC-SHA256 of ``producer \\0 normalized email`` under another HKDF
  subkey of ``LISTBOSS_DATA_KEY`` (32 hex characters): anyone who holds the secret can
  find a person's key from the email, and the bus never carries an unkeyed hash of it.
- **Creation** publishes with ``Nats-Expected-Last-Subject-Sequence: 0``: JetStream stores
  it only when the subject is empty, so concurrent creators (replicas, parallel requests)
  end with one key; the losers read the winner's with a direct get.
- **Generations**: the stream sequence of a key's message is sealed with the data
  (``SealedData.key_sequence``). A person erased and captured again gets a new key under
  the same id and a new sequence, so data sealed with a destroyed key reads as *erased*,
  never as a broken ciphertext, even when a newer key exists.
- **Erasure** erases the key's message (JetStream overwrites the bytes on disk) and
  broadcasts the key id on core NATS; every replica drops it from its cache.
- **Associated data** binds a sealed blob to its producer and event (and to what it
  holds: the person or the contact data), so it cannot be moved to another event.

Reading gives one of three outcomes: the clear data; *erased* (no key, or another
generation: the item is handled without the person); or :class:`~listboss_common.bus.PoisonMessage`
(the key exists and the ciphertext does not authenticate: tampered or corrupt).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import nats.errors
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.config import ConfigError

log = structlog.get_logger("listboss.personal_data")

DATA_KEY_ENV = "LISTBOSS_DATA_KEY"
# The value docs/operations.md shows as an example: refused, like all zero bytes.
EXAMPLE_DATA_KEY = "bGlzdGJvc3MtZXhhbXBsZS1kYXRhLWtleS0wMDAwMDA"
DATA_KEY_BYTES = 32
KEY_ID_LENGTH = 32
NONCE_BYTES = 12

# Core NATS subject on which erasure tells every replica to drop a key from its cache.
# Outside listboss.personkeys.>: a core publish there would be stored in the keys stream.
KEY_DESTROYED_SUBJECT = "listboss.broadcast.personkey.destroyed"

# JetStream's "wrong last sequence" errors: the key exists already.
_WRONG_LAST_SEQUENCE = (10071, 10164)
# Keys asked for in one batched direct get: a request of ~25 KiB of subjects.
_KEYS_PER_READ = 256

# (producer, email) whose key ids a Keyring remembers.
KEY_ID_MEMORY = 100_000

_PERSON = b"person"
_CONTACT_DATA = b"contact_data"


# --------------------------------------------------------------------------- the secret


def parse_data_key(value: str | None) -> bytes:
    """The 32 bytes of a ``LISTBOSS_DATA_KEY`` value (base64url, padding optional);
    :class:`~listboss_common.config.ConfigError` naming the variable when it is missing,
    malformed, of another length, or a well-known value."""
    text = (value or "").strip()
    if not text:
        raise ConfigError(f"{DATA_KEY_ENV} must be set (32 random bytes, base64url; see docs/operations.md)")
    try:
        standard = text.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except ValueError:
        raise ConfigError(f"{DATA_KEY_ENV} is not base64url") from None
    if len(raw) != DATA_KEY_BYTES:
        raise ConfigError(f"{DATA_KEY_ENV} must decode to {DATA_KEY_BYTES} bytes, not {len(raw)}")
    if raw == bytes(DATA_KEY_BYTES) or text.rstrip("=") == EXAMPLE_DATA_KEY:
        raise ConfigError(f"{DATA_KEY_ENV} is a well-known example value; generate a random one")
    return raw


def new_data_key() -> str:
    """A fresh ``LISTBOSS_DATA_KEY`` value: 32 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(DATA_KEY_BYTES)).decode().rstrip("=")


def normalize_email(email: str) -> str:
    """The form ingest stores (trimmed, lower case): the key id must not depend on spelling."""
    return email.strip().lower()


class Keyring:
    """What ``LISTBOSS_DATA_KEY`` derives: key ids and the wrapping of data keys."""

    def __init__(self, data_key: bytes):
        if len(data_key) != DATA_KEY_BYTES:
            raise ConfigError(f"{DATA_KEY_ENV} must be {DATA_KEY_BYTES} bytes")
        self._wrapping = AESGCM(_derive(data_key, b"listboss person-key wrapping v1"))
        self._naming = _derive(data_key, b"listboss person-key id v1")
        # Key ids of recent (producer, email): an HMAC per event costs more than sealing the person.
        self._key_ids: OrderedDict[tuple[str, str], str] = OrderedDict()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        return cls(parse_data_key((environ if environ is not None else os.environ).get(DATA_KEY_ENV)))

    def key_id(self, producer: str, email: str) -> str:
        remembered = self._key_ids.get((producer, email))
        if remembered is not None:
            return remembered
        message = producer.encode() + b"\0" + normalize_email(email).encode()
        key_id = hmac.new(self._naming, message, hashlib.sha256).hexdigest()[:KEY_ID_LENGTH]
        self._key_ids[(producer, email)] = key_id
        if len(self._key_ids) > KEY_ID_MEMORY:
            self._key_ids.popitem(last=False)  # the oldest remembered: a plain bound, no reordering on hits
        return key_id

    def wrap(self, key_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._wrapping.encrypt(nonce, key, key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key; :class:`KeyUnreadable` when the stored bytes do not open (another
        ``LISTBOSS_DATA_KEY``, or damage): a fault of configuration, never of one item."""
        try:
            return self._wrapping.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):
            raise KeyUnreadable(f"person key {key_id} does not open with this {DATA_KEY_ENV}") from None


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class KeyUnreadable(Exception):
    """A stored person key that this service's ``LISTBOSS_DATA_KEY`` cannot unwrap."""


# --------------------------------------------------------------------------- sealing


@dataclass(frozen=True)
class PersonKey:
    key_id: str
    # The stream sequence of the key's message: its generation.
    sequence: int
    key: bytes

    @cached_property
    def cipher(self) -> AESGCM:
        """Made once per cached key: building it costs as much as sealing a person."""
        return AESGCM(self.key)

    @cached_property
    def sealed_data_prefix(self) -> bytes:
        """``SealedData.key_id`` on the wire: the same in everything this key seals."""
        return bus.length_delimited(b"\x0a", self.key_id.encode())

    @cached_property
    def sealed_data_suffix(self) -> bytes:
        """``SealedData.key_sequence`` on the wire."""
        return b"\x20" + bus.varint(self.sequence)


def _associated(kind: bytes, producer: str, event_id: str) -> bytes:
    return kind + b"\0" + producer.encode() + b"\0" + event_id.encode()


def seal(key: PersonKey, plaintext: bytes, associated: bytes) -> event_pb2.SealedData:
    nonce = os.urandom(NONCE_BYTES)
    return event_pb2.SealedData(
        key_id=key.key_id,
        nonce=nonce,
        ciphertext=key.cipher.encrypt(nonce, plaintext, associated),
        key_sequence=key.sequence,
    )


def unseal(key: PersonKey, sealed: event_pb2.SealedData, associated: bytes) -> bytes:
    """The clear bytes; :class:`~listboss_common.bus.PoisonMessage` when they do not
    authenticate under the key that sealed them (tampered, or moved from another event)."""
    try:
        return key.cipher.decrypt(sealed.nonce, sealed.ciphertext, associated)
    except (InvalidTag, ValueError):
        raise bus.PoisonMessage(f"sealed data under person key {sealed.key_id} does not authenticate") from None


def seal_person(event: event_pb2.Event, key: PersonKey) -> None:
    """Replaces ``event.person`` by ``event.sealed_person``, in place."""
    sealed = seal(key, event.person.SerializeToString(), _associated(_PERSON, event.producer, event.id))
    event.ClearField("person")
    event.sealed_person.CopyFrom(sealed)


def unseal_person(event: event_pb2.Event, key: PersonKey) -> event_pb2.Person:
    plaintext = unseal(key, event.sealed_person, _associated(_PERSON, event.producer, event.id))
    person = event_pb2.Person()
    person.ParseFromString(plaintext)
    return person


def seal_contact_data(change: contact_change_pb2.ContactChange, key: PersonKey) -> None:
    """Replaces ``change.contact_data`` by ``change.sealed_contact_data``, in place."""
    sealed = sealed_contact_data(
        key, change.contact_data, change.event.producer, change.event.id, os.urandom(NONCE_BYTES)
    )
    change.ClearField("contact_data")
    change.sealed_contact_data.ParseFromString(sealed)


def nonces(count: int) -> list[bytes]:
    """``count`` random nonces from one read of the system's random source (a read per seal
    costs more than the encryption of a contact's few fields)."""
    pool = os.urandom(NONCE_BYTES * count)
    return [pool[start : start + NONCE_BYTES] for start in range(0, len(pool), NONCE_BYTES)]


def contact_data_plaintext(contact_data: Mapping[str, str]) -> bytes:
    """What sealed contact data holds: a ``ContactChange`` with only its ``contact_data`` map,
    entries in key order (what deterministic serialization writes), encoded directly."""
    entries = []
    for name in sorted(contact_data):
        key, value = name.encode(), contact_data[name].encode()
        entry = b"\x0a" + bus.varint(len(key)) + key + b"\x12" + bus.varint(len(value)) + value
        entries.append(b"\x22" + bus.varint(len(entry)) + entry)
    return b"".join(entries)


def sealed_contact_data(
    key: PersonKey, contact_data: Mapping[str, str], producer: str, event_id: str, nonce: bytes
) -> bytes:
    """The serialized ``SealedData`` of an event's contact data (what ``sealed_contact_data``
    of its change holds), built as bytes: no protobuf message is made. ``nonce`` is fresh
    randomness of :data:`NONCE_BYTES` (:func:`nonces`), never reused."""
    associated = _associated(_CONTACT_DATA, producer, event_id)
    ciphertext = key.cipher.encrypt(nonce, contact_data_plaintext(contact_data), associated)
    return (
        key.sealed_data_prefix
        + b"\x12\x0c"  # nonce: field 2, 12 bytes
        + nonce
        + bus.length_delimited(b"\x1a", ciphertext)
        + key.sealed_data_suffix
    )


def unseal_contact_data(change: contact_change_pb2.ContactChange, key: PersonKey) -> dict[str, str]:
    associated = _associated(_CONTACT_DATA, change.event.producer, change.event.id)
    holder = contact_change_pb2.ContactChange()
    holder.ParseFromString(unseal(key, change.sealed_contact_data, associated))
    return dict(holder.contact_data)


# --------------------------------------------------------------------------- the key store


def key_subject(producer: str, key_id: str) -> str:
    return f"listboss.personkeys.{producer}.{key_id}"


class PersonKeys:
    """The key store on JetStream, with an LRU cache of unwrapped keys.

    ``for_people`` (ingest) gets or creates keys; ``find`` (consumers) only reads;
    ``destroy`` (erasure) erases. A NATS failure surfaces as the client's error (a
    timeout, no responders, not connected) for the caller to treat as an outage.
    """

    def __init__(
        self, js: JetStreamContext, keyring: Keyring, *, cache_size: int = 100_000, timeout: float = 5.0
    ) -> None:
        self._js = js
        self.keyring = keyring
        self._cache: OrderedDict[str, PersonKey] = OrderedDict()
        self._cache_size = cache_size
        self._timeout = timeout
        # Gets or creations under way, by key id: concurrent calls about the same new person
        # share one round trip instead of racing to create the key and reading the winner's.
        self._pending: dict[str, asyncio.Future[PersonKey]] = {}

    # ------------------------------------------------------------------ cache

    def _cached(self, key_id: str) -> PersonKey | None:
        found = self._cache.get(key_id)
        if found is not None:
            self._cache.move_to_end(key_id)
        return found

    def _remember(self, key: PersonKey) -> PersonKey:
        present = self._cache.get(key.key_id)
        if present is None or present.sequence <= key.sequence:
            self._cache[key.key_id] = key
            self._cache.move_to_end(key.key_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return key

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    def on_broadcast(self, payload: bytes) -> None:
        """The handler of :data:`KEY_DESTROYED_SUBJECT` (see :meth:`listen`)."""
        self.forget(payload.decode("ascii", errors="replace"))

    async def listen(self, nc: NatsClient):
        """Drops keys from this replica's cache when any replica destroys them."""
        return await bus.listen(nc, KEY_DESTROYED_SUBJECT, self.on_broadcast)

    # ------------------------------------------------------------------ reads and writes

    async def _read(self, producer: str, key_id: str) -> PersonKey | None:
        """The stored key, or None when there is none (never created, or erased)."""
        try:
            message = await self._js.get_last_msg(bus.PERSON_KEYS.name, key_subject(producer, key_id), direct=True)
        except NotFoundError:
            return None
        if not message.data:  # an erased message may still answer, emptied
            return None
        assert message.seq is not None
        return self._remember(PersonKey(key_id, message.seq, self.keyring.unwrap(key_id, message.data)))

    async def _read_many(self, wanted: Mapping[str, str]) -> dict[str, PersonKey]:
        """The stored keys among ``wanted`` (key id -> producer), by key id: one batched direct
        get (``multi_last``) per :data:`_KEYS_PER_READ` keys instead of a round trip per key."""
        found: dict[str, PersonKey] = {}
        items = list(wanted.items())
        for start in range(0, len(items), _KEYS_PER_READ):
            by_subject = {
                key_subject(producer, key_id): key_id for key_id, producer in items[start : start + _KEYS_PER_READ]
            }
            for subject, sequence, data in await self._last_messages(list(by_subject)):
                key_id = by_subject.get(subject)
                if key_id is not None and data:  # an erased message may still answer, emptied
                    found[key_id] = self._remember(PersonKey(key_id, sequence, self.keyring.unwrap(key_id, data)))
        return found

    async def _last_messages(self, subjects: Sequence[str]) -> list[tuple[str, int, bytes]]:
        """(subject, sequence, data) of the last message on each of ``subjects`` that has one.

        JetStream's batched direct get streams one reply per message found to the request's
        inbox and ends with a status-only message (204 end of batch, 404 none found)."""
        nc = self._js._nc  # type: ignore[attr-defined]  # nats-py keeps the connection here
        inbox = nc.new_inbox()
        subscription = await nc.subscribe(inbox)
        try:
            request = json.dumps({"multi_last": list(subjects), "batch": len(subjects)}).encode()
            await nc.publish(f"$JS.API.DIRECT.GET.{bus.PERSON_KEYS.name}", request, reply=inbox)
            messages: list[tuple[str, int, bytes]] = []
            # Bounded: one reply per subject at most, then the end of the batch.
            for _ in range(len(subjects) + 1):
                reply = await subscription.next_msg(timeout=self._timeout)
                headers = reply.headers or {}
                status = headers.get("Status")
                if status == "404":
                    break
                if status is not None:
                    if status != "204":
                        raise APIError(code=int(status), description=str(headers.get("Description", "")))
                    break
                messages.append((headers["Nats-Subject"], int(headers["Nats-Sequence"]), reply.data))
            return messages
        finally:
            await subscription.unsubscribe()

    async def _get_or_create(self, producer: str, key_id: str) -> PersonKey:
        # Bounded: a key destroyed between a failed create and the read is simply created again.
        for _ in range(3):
            key = os.urandom(DATA_KEY_BYTES)
            try:
                ack = await self._js.publish(
                    key_subject(producer, key_id),
                    self.keyring.wrap(key_id, key),
                    stream=bus.PERSON_KEYS.name,
                    timeout=self._timeout,
                    headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                )
                return self._remember(PersonKey(key_id, ack.seq, key))
            except APIError as error:
                if error.err_code not in _WRONG_LAST_SEQUENCE:
                    raise
            stored = await self._read(producer, key_id)  # another creator was first
            if stored is not None:
                return stored
        raise nats.errors.TimeoutError()  # the key keeps appearing and vanishing: retry later

    async def for_people(self, people: Iterable[tuple[str, str]]) -> dict[tuple[str, str], PersonKey]:
        """The current key of each (producer, email), created where there is none; the
        cache first, then every miss at once."""
        found: dict[tuple[str, str], PersonKey] = {}
        missing: dict[tuple[str, str], str] = {}
        for producer, email in people:
            if (producer, email) in found or (producer, email) in missing:
                continue
            key_id = self.keyring.key_id(producer, email)
            cached = self._cached(key_id)
            if cached is not None:
                found[(producer, email)] = cached
            else:
                missing[(producer, email)] = key_id
        if missing:
            stored = await self._read_many({key_id: producer for (producer, _), key_id in missing.items()})
            to_create = {person: key_id for person, key_id in missing.items() if key_id not in stored}
            found.update((person, stored[key_id]) for person, key_id in missing.items() if key_id in stored)
            created = await asyncio.gather(
                *(self._shared_get_or_create(producer, key_id) for (producer, _), key_id in to_create.items())
            )
            found.update(zip(to_create, created, strict=True))
        return found

    def _shared_get_or_create(self, producer: str, key_id: str) -> asyncio.Future[PersonKey]:
        """:meth:`_get_or_create`, joined by every call that wants the same key meanwhile."""
        pending = self._pending.get(key_id)
        if pending is None:
            pending = asyncio.ensure_future(self._get_or_create(producer, key_id))
            self._pending[key_id] = pending
            pending.add_done_callback(lambda done: self._settled(key_id, done))
        # Shielded: a caller cancelled (its RPC ended) must not cancel the others' wait.
        return asyncio.shield(pending)

    def _settled(self, key_id: str, done: asyncio.Future[PersonKey]) -> None:
        if self._pending.get(key_id) is done:
            del self._pending[key_id]
        if not done.cancelled():
            done.exception()  # seen here, so a failure every waiter has left is not reported as lost

    async def find(self, wanted: Iterable[tuple[str, event_pb2.SealedData]]) -> dict[tuple[str, int], PersonKey]:
        """The keys that sealed these (producer, sealed data), by (key id, sequence); a
        key that is absent, or of another generation, is erased and left out."""
        found: dict[tuple[str, int], PersonKey] = {}
        to_read: dict[str, str] = {}  # key id -> producer
        for producer, sealed in wanted:
            cached = self._cached(sealed.key_id)
            if cached is not None and cached.sequence >= sealed.key_sequence:
                if cached.sequence == sealed.key_sequence:
                    found[(cached.key_id, cached.sequence)] = cached
                continue  # a newer generation is current: this one was destroyed
            to_read[sealed.key_id] = producer
        if to_read:
            for key in (await self._read_many(to_read)).values():
                found[(key.key_id, key.sequence)] = key
        return found

    async def destroy(self, producer: str, email: str) -> str:
        """Erases the person's key (idempotent) and tells every replica; returns its id."""
        key_id = self.keyring.key_id(producer, email)
        self.forget(key_id)
        try:
            message = await self._js.get_last_msg(bus.PERSON_KEYS.name, key_subject(producer, key_id), direct=True)
        except NotFoundError:
            message = None
        if message is not None and message.seq is not None:
            await self._erase(message.seq)
        nc = self._js._nc  # type: ignore[attr-defined]  # nats-py keeps the connection here
        await bus.broadcast(nc, KEY_DESTROYED_SUBJECT, key_id.encode())
        self.forget(key_id)  # a read racing with the erase may have cached it again
        return key_id

    async def _erase(self, sequence: int) -> None:
        """Deletes the message and has the server overwrite its bytes on disk.

        Sent by hand, not through ``delete_msg``, so that ``no_erase: false`` is said
        rather than left to the server's default."""
        request = json.dumps({"seq": sequence, "no_erase": False}).encode()
        subject = f"$JS.API.STREAM.MSG.DELETE.{bus.PERSON_KEYS.name}"
        reply = await self._js._nc.request(subject, request, timeout=self._timeout)  # type: ignore[attr-defined]
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error and error.get("err_code") != 10057:  # 10057: no such sequence (erased already)
            raise APIError(code=error.get("code"), err_code=error.get("err_code"), description=error.get("description"))


# --------------------------------------------------------------------------- consumers


@dataclass(frozen=True)
class Opened:
    """What a consumer reads of one item's personal data. ``sealed`` says whether the item
    carried it sealed; ``person`` is None when the person was erased."""

    sealed: bool
    person: event_pb2.Person | None
    key: PersonKey | None = None


ERASED = Opened(True, None)


async def open_events(keys: PersonKeys | None, events: Sequence[event_pb2.Event]) -> list[Opened]:
    """Each event's person: unsealed, erased, or as it came (an event with no sealed
    person is read as it is). :class:`~listboss_common.bus.PoisonMessage` for the first
    sealed person that does not authenticate."""
    sealed = [(event.producer, event.sealed_person) for event in events if event.HasField("sealed_person")]
    if sealed and keys is None:
        raise RuntimeError("sealed personal data arrived and no person keys are configured")
    found = await keys.find(sealed) if sealed and keys is not None else {}
    opened = []
    for event in events:
        if not event.HasField("sealed_person"):
            opened.append(Opened(False, event.person))
            continue
        key = found.get((event.sealed_person.key_id, event.sealed_person.key_sequence))
        opened.append(ERASED if key is None else Opened(True, unseal_person(event, key), key))
    return opened


async def open_changes(
    keys: PersonKeys | None, changes: Sequence[contact_change_pb2.ContactChange]
) -> list[tuple[str, dict[str, str]]]:
    """Each change's (email, contact data), unsealed; ("", {}) for an erased person."""
    opened = await open_events(keys, [change.event for change in changes])
    result: list[tuple[str, dict[str, str]]] = []
    for change, person in zip(changes, opened, strict=True):
        if person.person is None:
            result.append(("", {}))
        elif person.key is not None and change.HasField("sealed_contact_data"):
            result.append((person.person.email, unseal_contact_data(change, person.key)))
        else:
            result.append((person.person.email, dict(change.contact_data)))
    return result
