"""The outbox relay's publisher against a real nats-server: every message's PubAck, in order;
a subject no stream stores and a repeated message id are told apart from a stored message."""

from __future__ import annotations

from listboss_common import bus
from listboss_contacts.tag_changes import AckedPublisher, PublishRefused, publication_error


async def test_each_message_gets_its_own_puback(nc, js):
    await bus.ensure_streams(js, [bus.TAG_CHANGES])
    publisher = AckedPublisher(nc)
    messages = [(bus.tag_changes_subject("alice"), f"change {n}".encode(), f"tagchange/{n}") for n in range(50)]
    replies = await publisher.publish(messages, timeout=10)
    assert [publication_error(n, reply, 10) for n, reply in enumerate(replies)] == [None] * 50
    info = await js.stream_info(bus.TAG_CHANGES.name)
    assert info.state.messages == 50
    # The same ids again: acknowledged as duplicates (stored once), so the rows may go.
    again = await publisher.publish(messages[:3], timeout=10)
    assert [publication_error(n, reply, 10) for n, reply in enumerate(again)] == [None] * 3
    assert (await js.stream_info(bus.TAG_CHANGES.name)).state.messages == 50


async def test_a_subject_no_stream_stores_is_refused(nc, js):
    await bus.ensure_streams(js, [bus.TAG_CHANGES])
    publisher = AckedPublisher(nc)
    replies = await publisher.publish(
        [("nowhere.stored", b"x", "tagchange/1"), (bus.tag_changes_subject("alice"), b"y", "tagchange/2")], timeout=10
    )
    assert isinstance(publication_error(1, replies[0], 10), PublishRefused)
    assert publication_error(2, replies[1], 10) is None


def test_a_missing_reply_is_a_timeout():
    error = publication_error(7, None, 1.5)
    assert isinstance(error, TimeoutError) and "7" in str(error)
