"""What a JetStream stream holds, read back message by message for assertions."""

from __future__ import annotations

from listboss.events.v1 import event_pb2
from listboss_common import bus


async def event_messages(js) -> list[tuple[str, str | None, list[event_pb2.Event]]]:
    """Every message on LISTBOSS_EVENTS: (subject, Nats-Msg-Id, decoded events)."""
    stream = bus.EVENTS.name
    info = await js.stream_info(stream)
    found: list[tuple[str, str | None, list[event_pb2.Event]]] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, seq=seq)
        found.append(
            (message.subject, (message.headers or {}).get("Nats-Msg-Id"), bus.EVENT_ITEMS.decode(message.data))
        )
    return found


async def stored_events(js) -> list[event_pb2.Event]:
    """Every event stored on LISTBOSS_EVENTS, in order."""
    return [event for _, _, events in await event_messages(js) for event in events]
