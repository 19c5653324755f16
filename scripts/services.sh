#!/usr/bin/env bash
# Starts the local services the test suite talks to, when they are not already up:
# PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres) and ClickHouse on 127.0.0.1:8123.
# Safe to run again.
set -euo pipefail
log() { printf '[services] %s\n' "$*" >&2; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  log "starting PostgreSQL"
  for v in $(ls /etc/postgresql 2>/dev/null); do
    # No inherited descriptors: the server must never hold the caller's pipes open.
    pg_ctlcluster --skip-systemctl-redirect "$v" main start </dev/null >/dev/null 2>&1 \
      || pg_ctlcluster "$v" main start </dev/null >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
fi
pg_up || { log "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1; }

# Leftovers of interrupted test runs.
psql -q -h 127.0.0.1 -U postgres -d postgres -At \
  -c "SELECT 'DROP DATABASE IF EXISTS ' || datname || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'st\_%'" \
  | psql -q -h 127.0.0.1 -U postgres -d postgres >/dev/null 2>&1 || true
log "PostgreSQL ready"

# ClickHouse (the analytics backend of the production column): a server of our own, with its
# config and data under $SUBSTRATE_CLICKHOUSE_DIR, listening on 127.0.0.1 only (HTTP 8123).
ch_dir="${SUBSTRATE_CLICKHOUSE_DIR:-/tmp/substrate-clickhouse}"
ch_http="${SUBSTRATE_CLICKHOUSE_HTTP_PORT:-8123}"
ch_up() { curl -fsS "http://127.0.0.1:${ch_http}/ping" >/dev/null 2>&1; }
if command -v clickhouse-server >/dev/null && ! ch_up; then
  log "starting ClickHouse in ${ch_dir}"
  mkdir -p "${ch_dir}/data" "${ch_dir}/tmp" "${ch_dir}/user_files" "${ch_dir}/format_schemas" "${ch_dir}/log"
  cat >"${ch_dir}/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>${ch_dir}/log/clickhouse-server.log</log>
    <errorlog>${ch_dir}/log/clickhouse-server.err.log</errorlog>
    <size>10M</size>
    <count>2</count>
  </logger>
  <http_port>${ch_http}</http_port>
  <tcp_port>${SUBSTRATE_CLICKHOUSE_TCP_PORT:-19000}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>67108864</mark_cache_size>
  <path>${ch_dir}/data/</path>
  <tmp_path>${ch_dir}/tmp/</tmp_path>
  <user_files_path>${ch_dir}/user_files/</user_files_path>
  <format_schema_path>${ch_dir}/format_schemas/</format_schema_path>
  <users_config>${ch_dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
XML
  cat >"${ch_dir}/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
  # Fully detached (own session, no inherited descriptors) so it never holds the caller's pipes.
  (cd "${ch_dir}" && setsid nohup clickhouse-server --config-file="${ch_dir}/config.xml" \
     </dev/null >"${ch_dir}/log/stdout.log" 2>&1 &)
  for _ in $(seq 1 60); do ch_up && break; sleep 0.5; done
  ch_up || { log "ClickHouse did not start; see ${ch_dir}/log"; exit 1; }
fi
if ch_up; then
  # Leftover databases of interrupted test runs (older than an hour, so a run in progress
  # elsewhere keeps its own).
  for db in $(curl -fsS "http://127.0.0.1:${ch_http}/" --data-binary \
      "SELECT DISTINCT database FROM system.tables WHERE database LIKE 'st\\_%' AND metadata_modification_time < now() - 3600"); do
    curl -fsS "http://127.0.0.1:${ch_http}/" --data-binary "DROP DATABASE IF EXISTS ${db}" >/dev/null || true
  done
  log "ClickHouse ready on 127.0.0.1:${ch_http}"
fi
