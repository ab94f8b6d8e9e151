#!/usr/bin/env bash
# The whole test suite against real services: PostgreSQL and a Kafka-protocol
# broker on 127.0.0.1 (installed and started by scripts/services.sh).
# Extra arguments go to the test runner, e.g. `scripts/test.sh backbone`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up

export CAREHUB_TEST_DATABASE_URL="${CAREHUB_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export CAREHUB_TEST_KAFKA="${CAREHUB_TEST_KAFKA:-127.0.0.1:9092}"

# Each test creates its own database carehub_t_<uuid>; drop those of earlier runs.
PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
  "select datname from pg_database where datname like 'carehub\_t\_%'" |
  while read -r db; do
    PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found: running cargo test" >&2
  cargo test --workspace --no-fail-fast "$@"
fi
