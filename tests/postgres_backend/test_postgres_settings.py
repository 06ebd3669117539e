"""How a ``postgresql://`` URL is read: asyncq's options taken out, libpq's left for
asyncpg, anything else refused with the list of what is known; and what a worker says of the
broker at start."""

from __future__ import annotations

import pytest
from asyncq_postgres import PostgresBackend, PostgresSettings

import asyncq
from asyncq.errors import ConfigurationError


def test_asyncqs_options_are_parsed_and_libpqs_go_to_asyncpg() -> None:
    settings = PostgresSettings.from_url(
        "postgres://app:secret@db.internal:6432/shop?schema=jobs&visibility_timeout=10"
        "&result_ttl=60&dead_ttl=3600&dead_max=5&pool_size=4&statement_timeout=2"
        "&lock_timeout=1&listen=false&poll_interval=0.2&sslmode=require&migrate=false"
    )
    assert settings.dsn == "postgresql://app:secret@db.internal:6432/shop?sslmode=require"
    assert (settings.schema, settings.visibility_timeout, settings.result_ttl) == (
        "jobs",
        10.0,
        60.0,
    )
    assert (settings.dead_ttl, settings.dead_max, settings.pool_size) == (3600.0, 5, 4)
    assert (settings.statement_timeout, settings.lock_timeout) == (2.0, 1.0)
    assert (settings.listen, settings.idle_look, settings.migrate) == (False, 0.2, False)


def test_defaults() -> None:
    settings = PostgresSettings.from_url("postgresql://127.0.0.1/test")
    assert (settings.schema, settings.pool_size, settings.listen) == ("asyncq", 10, True)
    assert settings.idle_look == 1.0
    assert PostgresSettings.from_url("postgresql://h/d?listen=false").idle_look == 0.05
    assert settings.pgbouncer is False


def test_pgbouncer_true_means_no_listen_and_refuses_listen_true() -> None:
    settings = PostgresSettings.from_url("postgresql://h:6432/d?pgbouncer=true")
    assert (settings.pgbouncer, settings.listen, settings.idle_look) == (True, False, 0.05)
    assert PostgresSettings.from_url("postgresql://h/d?pgbouncer=true&listen=false").pgbouncer
    with pytest.raises(ConfigurationError, match="listen=true cannot work with pgbouncer=true"):
        PostgresSettings.from_url("postgresql://h/d?pgbouncer=true&listen=true")


def test_listen_url_takes_listen_to_a_direct_connection() -> None:
    direct = "postgresql%3A%2F%2Fapp%3Apw%40db%3A5432%2Fshop%3Fsslmode%3Drequire"
    settings = PostgresSettings.from_url(
        f"postgresql://h:6432/shop?pgbouncer=true&listen_url={direct}"
    )
    assert settings.listen_url == "postgresql://app:pw@db:5432/shop?sslmode=require"
    assert (settings.pgbouncer, settings.listen, settings.idle_look) == (True, True, 1.0)
    with pytest.raises(ConfigurationError, match="contradict"):
        PostgresSettings.from_url(f"postgresql://h/d?listen=false&listen_url={direct}")
    with pytest.raises(ConfigurationError, match="must be a postgresql:// URL"):
        PostgresSettings.from_url("postgresql://h/d?listen_url=redis%3A%2F%2Fx")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/d?schema=Jobs", "bad value 'Jobs' for option 'schema'"),
        ("postgresql://h/d?schema=a;drop", "must be a lower-case identifier"),
        ("postgresql://h/d?visibility_timeout=0", "must be a number > 0"),
        ("postgresql://h/d?listen=maybe", "must be true or false"),
        ("postgresql://h/d?visiblity_timeout=5", "unknown option 'visiblity_timeout'"),
    ],
)
def test_bad_options_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        PostgresSettings.from_url(url)


def test_both_schemes_resolve_to_the_backend_and_it_says_where_it_is() -> None:
    for scheme in ("postgresql", "postgres"):
        app = asyncq.App(f"{scheme}://u:pw@127.0.0.1:5432/test?schema=s1")
        assert isinstance(app.backend, PostgresBackend)
        assert app.backend.describe() == "PostgreSQL at 127.0.0.1:5432, database test, schema s1"
        assert "pw" not in app.describe_broker()


@pytest.mark.anyio
async def test_each_connection_has_the_urls_timeouts_and_no_jit(url: str) -> None:
    app = asyncq.App(f"{url}&statement_timeout=2&lock_timeout=1")
    async with app:
        backend = app.backend
        assert isinstance(backend, PostgresBackend)
        async with backend._db.connection() as conn:  # the pool the broker itself uses
            settings = await conn.fetchrow(
                "SELECT current_setting('statement_timeout') AS statement, "
                "current_setting('lock_timeout') AS lock, current_setting('jit') AS jit"
            )
    assert dict(settings) == {"statement": "2s", "lock": "1s", "jit": "off"}
