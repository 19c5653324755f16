#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing (scripts/setup.sh),
# starts the local services (scripts/services.sh), then runs every test in parallel
# (cargo nextest when available) against SQLite, PostgreSQL and the other real backends.
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
