"""What asyncq raises for aiormq's errors (asyncq_amqp/errors.py): a lost connection is
BrokerUnavailable, which producers retry; a refusal by the server is not."""

from __future__ import annotations

import aiormq
import pytest
from asyncq_amqp.errors import mapped

from asyncq.errors import BrokerError, BrokerUnavailable


def test_a_channel_closed_under_a_lost_connection_is_unavailable() -> None:
    # What aiormq raises for a channel opened while aio-pika reconnects: no reply code.
    with pytest.raises(BrokerUnavailable, match="unreachable opening a channel"):
        with mapped("opening a channel", "amqp://h/"):
            raise aiormq.exceptions.ChannelClosed(None, None)


def test_a_channel_the_server_closed_is_a_broker_error() -> None:
    with pytest.raises(BrokerError) as raised:
        with mapped("publishing", "amqp://h/"):
            raise aiormq.exceptions.ChannelClosed(403, "ACCESS_REFUSED")
    assert not isinstance(raised.value, BrokerUnavailable)
