"""aio-pika's and aiormq's exceptions become asyncq's here, at the backend's boundary."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import aiormq

from asyncq.errors import BrokerError, BrokerUnavailable, ConfigurationError, MessageTooLarge

__all__ = ["QueueFull", "mapped"]


class QueueFull(BrokerError):
    """RabbitMQ refused a publish: the queue is at its ``max_length`` (or a policy's)."""


# RabbitMQ's words when a publish is over its max_message_size (it closes the channel).
_MESSAGE_SIZE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")


@contextmanager
def mapped(action: str, where: str) -> Iterator[None]:
    """Raise asyncq's error for a driver's one, saying what was being done (``action``) on
    which broker (``where``, a redacted URL)."""
    try:
        yield
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        too_large = _MESSAGE_SIZE.search(str(exc))
        if too_large is not None:
            # The broker's limit is lower than asyncq took it to be: say so, and how.
            size, limit = (int(n) for n in too_large.groups())
            raise MessageTooLarge(
                f"RabbitMQ refused a job {action}: it is {size:,} bytes, larger than the "
                f"broker's max_message_size of {limit:,}; nothing was sent. Pass large "
                f"data by reference, or set max_message_size={limit} in the broker URL so "
                "such jobs are refused before they are published",
                size=size,
                limit=limit,
            ) from exc
        # RabbitMQ names the first argument that differs; a classic work queue's priorities
        # come before its type.
        priorities = (
            " (x-max-priority: it is a classic work queue, which asyncq declares with priorities)"
            if "'x-max-priority'" in str(exc)
            else ""
        )
        raise ConfigurationError(
            f"RabbitMQ refused a declaration {action} ({exc}); a queue of that name "
            f"exists with other arguments{priorities} (queue_type, max_length?): delete it "
            "or use another prefix"
        ) from exc
    except (
        aiormq.exceptions.AMQPConnectionError,
        aiormq.exceptions.ChannelInvalidStateError,
        ConnectionError,
        OSError,
    ) as exc:
        raise BrokerUnavailable(f"RabbitMQ at {where} unreachable {action}: {exc}") from exc
    except aiormq.exceptions.ChannelClosed as exc:
        if exc.args and exc.args[0] is None:
            # No reply code: the server did not close it, its connection went under it
            # (a channel opened while aio-pika reconnects, say).
            raise BrokerUnavailable(f"RabbitMQ at {where} unreachable {action}: {exc}") from exc
        raise BrokerError(f"RabbitMQ failed {action}: {exc}") from exc
    except aiormq.exceptions.AMQPError as exc:
        raise BrokerError(f"RabbitMQ failed {action}: {exc}") from exc
    except TimeoutError as exc:
        raise BrokerUnavailable(f"RabbitMQ at {where} did not answer {action} in time") from exc
