"""RabbitMQ's consumer timeout: how asyncq asks for it, and what it says when one strikes.

RabbitMQ closes a channel holding a delivery unacknowledged past its consumer timeout
(PRECONDITION_FAILED, "delivery acknowledgement on channel N timed out") and puts the
channel's deliveries back in their queues, however alive their worker is: a long job would
run again while it still runs. The broker URL's ``consumer_timeout`` is the backend's
``ack_deadline``, so the worker stops every attempt before it (asyncq/deadlines.py).

Since RabbitMQ 3.11.15 a consumer can ask for a timeout of its own (``x-consumer-timeout``
in basic.consume, which wins over a queue's argument or policy and over the global
``consumer_timeout`` of rabbitmq.conf): asyncq asks for the URL's. Older brokers ignore the
argument and apply their global setting only, which the URL cannot see; if that is the
shorter, the channel is closed on a job asyncq thought in time, and the one ERROR logged
here says so and what to change.
"""

from __future__ import annotations

import logging
import re

from pamqp.common import FieldTable

from .settings import AmqpSettings

__all__ = ["PER_CONSUMER_SINCE", "RAISE_CONSUMER_TIMEOUT", "consume_arguments", "timed_out"]

log = logging.getLogger("asyncq.amqp")

PER_CONSUMER_SINCE = (3, 11, 15)
"""The first RabbitMQ that applies ``x-consumer-timeout`` to a consumer."""

RAISE_CONSUMER_TIMEOUT = (
    "raise consumer_timeout (seconds) in the broker URL; RabbitMQ before 3.11.15 applies only "
    "the consumer_timeout (ms) of its rabbitmq.conf, so raise that too"
)
"""How to allow longer jobs, for the worker's errors (``Backend.ack_deadline_hint``)."""

_TIMED_OUT = re.compile(r"delivery acknowledgement on channel \d+ timed out")
_VALUE = re.compile(r"Timeout value used: (\d+) ms")


def consume_arguments(settings: AmqpSettings) -> FieldTable:
    """The basic.consume arguments of asyncq's consumers."""
    # Sent to every RabbitMQ: older ones ignore what they do not know.
    return {"x-consumer-timeout": round(settings.consumer_timeout * 1000)}


def timed_out(
    exc: BaseException | None, settings: AmqpSettings, version: tuple[int, ...] | None
) -> bool:
    """If RabbitMQ closed a consumer channel over a consumer timeout (``exc``), log why and
    what to do, once per channel closed, and say so."""
    text = str(exc or "")
    if not _TIMED_OUT.search(text):
        return False
    found = _VALUE.search(text)
    used_ms = int(found.group(1)) if found else None
    used = f"{used_ms} ms" if used_ms is not None else "its consumer timeout"
    ours = settings.consumer_timeout
    broker = "RabbitMQ " + ".".join(map(str, version)) if version else "RabbitMQ"
    if version is not None and version < PER_CONSUMER_SINCE:
        applies = f"{broker} applies only the consumer_timeout of its own rabbitmq.conf"
    else:
        applies = f"{broker} applied a timeout of {used}, not the {ours:g} s asked for"
    fix = (
        f"set consumer_timeout={used_ms / 1000:g} in the broker URL, or raise consumer_timeout "
        "in rabbitmq.conf"
        if used_ms is not None
        else "set consumer_timeout in the broker URL to the broker's"
    )
    log.error(
        "RabbitMQ closed the consumer channel: a delivery stayed unacknowledged past its "
        "consumer timeout (%s). The jobs delivered on that channel went back to their queue and "
        "run again, while this worker may still run them. The broker URL says "
        "consumer_timeout=%g s, but %s: %s, so that asyncq stops jobs before the broker "
        "takes them back.",
        used,
        ours,
        applies,
        fix,
    )
    return True
