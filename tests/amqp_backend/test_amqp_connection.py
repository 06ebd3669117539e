"""Connecting to RabbitMQ: the connection options of the URL (``heartbeat``, ``channel_max``,
``connection_attempts``, ``retry_delay``) are checked, take effect on the broker's side of
the connection, and a connect that cannot succeed is one line from the CLI with the right
exit code: 2 for what the URL got wrong (a vhost, credentials), 1 for a broker that is not
there, and no log lines of aiormq's or aio-pika's around it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import services
from harness import TESTS_DIR, worker_env

import asyncq
from asyncq.backend import resolve_backend

from .amqp_support import amqp_url, rabbitmqctl

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("heartbeat", "-1", "must be an integer from 0 to 65534"),
        ("heartbeat", "65535", "must be an integer from 0 to 65534"),
        ("heartbeat", "1.5", "must be an integer from 0 to 65534"),
        ("channel_max", "4", "must be an integer from 8 to 65535"),
        ("channel_max", "70000", "must be an integer from 8 to 65535"),
        ("connection_attempts", "0", "must be an integer from 1 to 1000"),
        ("retry_delay", "-0.5", "must be a number of seconds from 0 to 3600"),
        ("retry_delay", "nan", "must be a number of seconds from 0 to 3600"),
    ],
)
def test_bad_connection_option_is_one_line_naming_it(
    option: str, value: str, expected: str
) -> None:
    url = f"{services.AMQP_URL}?records={services.REDIS_URL}&{option}={value}"
    with pytest.raises(asyncq.ConfigurationError) as caught:
        resolve_backend(url)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"bad value {value!r} for option {option!r}"), message
    assert expected in message, message


async def test_heartbeat_and_channel_max_are_what_the_broker_holds_the_connection_to(
    prefix: str,
) -> None:
    app = asyncq.App(amqp_url(prefix, heartbeat=7, channel_max=9))
    async with app:
        # RabbitMQ 3.10 lists the connection's name among its client properties.
        listed = await rabbitmqctl(
            "list_connections", "--no-table-headers", "timeout", "channel_max", "client_properties"
        )
    name = f"asyncq {prefix} {socket.gethostname()}:{os.getpid()}"
    ours = [line.split("\t")[:2] for line in listed.splitlines() if f'"{name}"' in line]
    assert ours == [["7", "9"]], listed


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # free once closed: nothing listens there


async def test_connection_attempts_and_retry_delay_to_a_closed_port(prefix: str) -> None:
    port = _closed_port()
    base = f"amqp://guest:guest@127.0.0.1:{port}/%2F?records={services.REDIS_URL}&prefix={prefix}"
    app = asyncq.App(f"{base}&connection_attempts=3&retry_delay=0.2")
    began = time.monotonic()
    with pytest.raises(asyncq.BrokerUnavailable) as caught:
        async with app:
            pass
    took = time.monotonic() - began
    message = str(caught.value)
    assert f"RabbitMQ at amqp://guest:***@127.0.0.1:{port}/%2F unreachable connecting" in message
    assert "(3 attempts, 0.2 s apart)" in message, message
    assert "\n" not in message
    assert 0.4 <= took < 5.0, f"3 attempts 0.2 s apart took {took:.2f} s"
    # One attempt (the default) fails at once.
    began = time.monotonic()
    with pytest.raises(asyncq.BrokerUnavailable) as once:
        async with asyncq.App(base):
            pass
    assert time.monotonic() - began < 0.4
    assert "attempts" not in str(once.value)


def _asyncq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncq", *args],
        cwd=TESTS_DIR,
        env=worker_env(TESTS_DIR),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _vhost_url(prefix: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{prefix}-nope?records={services.REDIS_URL}"


def _password_url(prefix: str) -> str:
    return f"amqp://guest:wrong-{prefix}@127.0.0.1:5672/%2F?records={services.REDIS_URL}"


def _closed_port_url(prefix: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F?records={services.REDIS_URL}"


CONNECT_FAILURES = {
    "unknown vhost": (
        _vhost_url,
        2,
        "RabbitMQ at amqp://guest:***@127.0.0.1:5672/{prefix}-nope refused the connection: "
        "vhost '{prefix}-nope' does not exist or user 'guest' may not use it",
    ),
    "wrong password": (
        _password_url,
        2,
        "RabbitMQ at amqp://guest:***@127.0.0.1:5672/%2F refused the connection: user 'guest' "
        "could not log in (wrong user name or password?)",
    ),
    "closed port": (_closed_port_url, 1, "cannot reach the broker: RabbitMQ at amqp://guest:***@"),
}


@pytest.mark.parametrize("command", ["stats", "run"])
@pytest.mark.parametrize(
    ("make_url", "code", "message"), CONNECT_FAILURES.values(), ids=CONNECT_FAILURES.keys()
)
def test_a_failed_connect_is_one_error_line_from_the_cli(
    prefix: str, command: str, make_url: object, code: int, message: str
) -> None:
    assert callable(make_url)
    args = ["apps.good:app", "--broker", make_url(prefix)]
    done = _asyncq(command, *args, *(["--burst"] if command == "run" else []))
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert message.format(prefix=prefix) in errors[0], errors[0]
    # `stats` says nothing else; `run` logs only its own start-up line before the error.
    others = [line for line in lines if line not in errors]
    if command == "stats":
        assert others == [], done.stderr
    else:
        assert len(others) == 1 and " asyncq.cli: asyncq " in others[0], done.stderr
    assert "aiormq" not in done.stderr and "aio_pika" not in done.stderr, done.stderr
