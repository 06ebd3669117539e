"""Finding a backend from a broker URL: entry points by scheme, clear errors otherwise."""

from __future__ import annotations

import sys

import pytest

import asyncq
from asyncq.backend import resolve_backend
from asyncq.memory import MemoryBackend


def test_memory_url_resolves_with_its_options(unique: str) -> None:
    backend = resolve_backend(f"memory://{unique}?visibility_timeout=2.5&result_ttl=60")
    assert isinstance(backend, MemoryBackend)
    assert backend.visibility_timeout == 2.5
    assert backend.result_ttl == 60.0


def test_unknown_scheme_names_the_installed_backends() -> None:
    with pytest.raises(asyncq.ConfigurationError) as error:
        resolve_backend("nosuch://somewhere")
    message = str(error.value)
    assert "nosuch://" in message
    assert "memory" in message


def test_url_without_scheme_is_a_configuration_error() -> None:
    with pytest.raises(asyncq.ConfigurationError, match="scheme"):
        resolve_backend("127.0.0.1:6379")


def hide_broker_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the broker client libraries (and our integrations of them) unimportable, as if
    the extra was not installed, whether or not it is in this environment."""
    for name in list(sys.modules):
        if name.split(".")[0] in {"asyncq_redis", "asyncq_amqp"}:
            monkeypatch.delitem(sys.modules, name)
    # The integrations ship in asyncq's wheel; what a missing extra leaves out is the
    # client library they import, and the hint comes from the extra that requires it.
    for name in ("redis", "aio_pika", "aiormq"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://127.0.0.1:6380/0", "redis"),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp"),
        ("amqps://guest:guest@127.0.0.1:5671/", "amqp"),
    ],
)
def test_missing_extra_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, extra: str
) -> None:
    hide_broker_clients(monkeypatch)
    with pytest.raises(asyncq.ConfigurationError) as error:
        resolve_backend(url)
    message = str(error.value)
    assert f"pip install 'asyncq[{extra}]'" in message
    assert "guest:guest" not in message  # the password stays out of errors


def test_unknown_option_is_named(unique: str) -> None:
    with pytest.raises(asyncq.ConfigurationError, match="visibilty_timeout"):
        resolve_backend(f"memory://{unique}?visibilty_timeout=3")


@pytest.mark.parametrize(
    "query",
    ["visibility_timeout=soon", "visibility_timeout=0", "visibility_timeout=-1", "result_ttl="],
)
def test_bad_option_value_is_a_configuration_error(unique: str, query: str) -> None:
    name = query.split("=")[0]
    with pytest.raises(asyncq.ConfigurationError, match=name):
        resolve_backend(f"memory://{unique}?{query}")


def test_password_is_masked_in_option_errors() -> None:
    with pytest.raises(asyncq.ConfigurationError) as error:
        resolve_backend("memory://user:hunter2@host/x?bogus=1")
    assert "hunter2" not in str(error.value)
    assert "bogus" in str(error.value)


def test_app_resolves_its_url_and_takes_a_backend_instance(
    monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    assert isinstance(asyncq.App(f"memory://{unique}").backend, MemoryBackend)

    instance = MemoryBackend(unique)
    assert asyncq.App(instance).backend is instance

    monkeypatch.setenv("ASYNCQ_BROKER", f"memory://{unique}-env")
    from_env = asyncq.App()
    assert from_env.broker_url == f"memory://{unique}-env"
    assert isinstance(from_env.backend, MemoryBackend)

    with pytest.raises(asyncq.ConfigurationError):
        asyncq.App("nosuch://x").backend  # noqa: B018 - resolving is the point


def test_app_masks_the_password_in_its_url() -> None:
    app = asyncq.App("amqp://guest:s3cret@127.0.0.1:5672/")
    assert "s3cret" not in app.broker_url
    assert "s3cret" not in repr(app)
