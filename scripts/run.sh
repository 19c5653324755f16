#!/usr/bin/env bash
# Runs substrate with embedded defaults (SQLite + embedded log + local files) on a fresh
# machine: installs the build prerequisites if missing, builds, and serves on 127.0.0.1:8080.
# Extra arguments go to `substrate serve`, e.g. scripts/run.sh --roles gateway,relay
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build
exec cargo run --release -- serve "$@"
