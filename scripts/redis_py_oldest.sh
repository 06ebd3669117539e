#!/usr/bin/env bash
# The Redis tests (tests/redis_backend and the contract suite's Redis runs) on the oldest redis-py
# that pyproject.toml's redis extra admits, in a virtualenv of its own (.venv-redis-oldest):
# the main test run gets the newest redis-py, and the two differ (redis-py 8 has a socket
# timeout of its own, get_connection() lost its argument, ...). .ci/run calls this after the
# main test run; it needs the brokers scripts/services.sh starts.
#
# The floor is 5.0.2: 5.0.0 has no Redis.aclose(), and 5.0.1's BlockingConnectionPool hangs
# for its whole timeout (30 s) when a new connection fails to open (it releases the
# connection while holding its own lock), which turns a wrong db or password, and every
# reconnection attempt during an outage, into "No connection available" half a minute later.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=true

VENV=.venv-redis-oldest
# The floor of the extra, "redis[hiredis]>=X" (perhaps ",<Y" after it), read from pyproject.toml so the two never drift.
FLOOR=$(python3 - <<'PY'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["redis"]
(spec,) = [s for s in extra if s.startswith("redis[")]
print(re.fullmatch(r"redis\[hiredis\]>=([0-9.]+)(,<[0-9.]+)?", spec).group(1))
PY
)

rm -rf "$VENV"
python3 -m venv "$VENV"
# shellcheck source=/dev/null
. "$VENV/bin/activate"
python -m pip install --quiet --disable-pip-version-check -e ".[dev]" "redis[hiredis]==$FLOOR"
python -c 'import hiredis, redis; print(f"redis-py {redis.__version__}, hiredis {hiredis.__version__}")'
# The default-lease kill test (31 s) is left to the main run: the 6 s one checks the same
# take-over here.
python -m pytest -q tests/redis_backend tests/test_contract.py -k redis \
    --deselect tests/redis_backend/test_redis_takeover.py::test_lost_workers_job_restarts_within_a_second_of_the_default_lease
