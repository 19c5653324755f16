#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing (scripts/setup.sh),
# starts the local services (scripts/services.sh), then runs every test in parallel
# (cargo nextest when available) against SQLite, PostgreSQL and the other real backends.
# That includes a smoke run of every benchmark program (tests/it/bench_smoke.rs: each built in
# the test profile and run for a second or two; its JSON must parse with figures > 0, no timed
# assertions), so the benchmarks never rot.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

scripts/setup.sh
scripts/services.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
