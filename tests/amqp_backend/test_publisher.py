"""The batch publisher's hand-encoded frames are byte for byte what pamqp encodes."""

from __future__ import annotations

import pytest
from asyncq_amqp.fastpath import Outgoing, encode_message
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader


def pamqp_frames(channel: int, message: Outgoing, max_body_frame: int) -> bytes:
    properties = spec.Basic.Properties(
        content_type="application/json",
        headers=message.headers,
        delivery_mode=2,
        priority=message.priority or None,
        message_id=message.message_id,
    )
    method = spec.Basic.Publish(
        exchange=message.exchange, routing_key=message.routing_key, mandatory=True
    )
    out = frame.marshal(method, channel)
    out += frame.marshal(ContentHeader(0, len(message.body), properties), channel)
    for start in range(0, len(message.body), max_body_frame):
        out += frame.marshal(ContentBody(message.body[start : start + max_body_frame]), channel)
    return out


@pytest.mark.parametrize(
    "message",
    [
        Outgoing("", "asyncq.default", b'{"v":1}', "01a2"),
        Outgoing("asyncq.wait.512", "asyncq.default.delayed", b"{}", "id", {"x-eta-ms": 17}),
        Outgoing("", "q", b"x" * 10_000, "big", {"x-attempt": 3, "x-task": "send"}),
        Outgoing("", "q", b"", "empty"),
        Outgoing("", "q", b"{}", "urgent", None, 9),
        Outgoing("asyncq.wait.16", "q", b"{}", "retried", {"x-attempt": 2}, 4),
    ],
    ids=["plain", "headers", "split-body", "empty-body", "priority", "headers-and-priority"],
)
def test_frames_match_pamqp(message: Outgoing) -> None:
    assert encode_message(7, message, 4096) == pamqp_frames(7, message, 4096)
