#!/usr/bin/env bash
# What the benchmark scripts share (sourced, not run): the build profile, the services check,
# building the benchmark programs, and a fresh nisshi broker (memory storage) on a free port.
#   PROFILE=release|debug  the build the benchmarks measure (default release; `debug` for a
#                          smoke run: seconds to build, figures meaningless as absolutes).
#   SKIP_SERVICES=1        do not run scripts/services.sh (it drops the `st_%` databases of
#                          test runs in progress); only check that PostgreSQL answers.
#   SKIP_BUILD=1           use the binaries already built for PROFILE.

PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}"
case "$PROFILE" in
  release) BIN_DIR="$TARGET/release"; CARGO_PROFILE=(--release) ;;
  debug) BIN_DIR="$TARGET/debug"; CARGO_PROFILE=() ;;
  *) echo "PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
PG_URL="${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"

# The services the benchmarks need: scripts/services.sh, or with SKIP_SERVICES=1 a check only.
bench_services() {
  if [ "${SKIP_SERVICES:-0}" = 1 ]; then
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not up on 127.0.0.1:5432" >&2; exit 1; }
  else
    scripts/services.sh >&2
  fi
}

# cargo build of the given targets (e.g. --bin substrate --example gateway_bench) in PROFILE.
bench_build() {
  [ "${SKIP_BUILD:-0}" = 1 ] && return 0
  cargo build "${CARGO_PROFILE[@]}" "$@" >&2
}

# A loopback port that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts a nisshi broker (memory storage) in a fresh directory $1 on a free port; sets
# BROKER_PID and BROKER_ADDR (host:port). The broker reads a .env in its working directory,
# hence the fresh one.
start_broker() {
  local dir="$1" port
  port=$(free_port)
  mkdir -p "$dir"
  (cd "$dir" && exec nisshi broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://nisshi/ \
    --group-initial-rebalance-delay 0s >"$dir/broker.log" 2>&1) &
  BROKER_PID=$!
  BROKER_ADDR="127.0.0.1:$port"
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "nisshi did not start; see $dir/broker.log" >&2
  return 1
}

# Stops the broker start_broker started (SIGTERM takes ~2 s).
stop_broker() {
  [ -n "${BROKER_PID:-}" ] || return 0
  kill "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}

# Whether the seed-000 peer can run: nisshi on PATH and its Python modules importable.
seed000_available() {
  command -v nisshi >/dev/null && python3 -c 'import fastapi, uvicorn, aiokafka' 2>/dev/null
}
