#!/usr/bin/env bash
# Starts the local services the test suite talks to, when they are not already up:
# PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres). Safe to run again.
set -euo pipefail
log() { printf '[services] %s\n' "$*" >&2; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  log "starting PostgreSQL"
  for v in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || pg_ctlcluster "$v" main start || true
  done
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
fi
pg_up || { log "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1; }

# Leftovers of interrupted test runs.
psql -q -h 127.0.0.1 -U postgres -d postgres -At \
  -c "SELECT 'DROP DATABASE IF EXISTS ' || datname || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'st\_%'" \
  | psql -q -h 127.0.0.1 -U postgres -d postgres >/dev/null 2>&1 || true
log "PostgreSQL ready"
