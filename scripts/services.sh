#!/usr/bin/env bash
# Installs (when missing) and starts what carehub needs on 127.0.0.1:
#   - PostgreSQL on :5432 (user postgres, password postgres; trust auth also works)
#   - Tansu, a Kafka-protocol broker, on :9092 with SQLite storage under .run/tansu
#   - dcmtk (Debian's package): the DICOM peers the tests talk to (echoscu, storescu, findscu)
# Idempotent: a second run only checks that both answer.
#
#   scripts/services.sh up      install if needed, start, wait until both answer
#   scripts/services.sh down    stop the broker this script started
#   scripts/services.sh status  say what answers
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run_dir="${CAREHUB_RUN_DIR:-$here/.run}"
pg_host=127.0.0.1 pg_port=5432
kafka_host=127.0.0.1 kafka_port=9092
tansu_version=0.6.0

log() { printf 'services: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

apt_install() {
  log "installing $* (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_ok() { PGPASSWORD=postgres PGCONNECT_TIMEOUT=3 psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }

postgres_up() {
  command -v psql >/dev/null || apt_install postgresql-client
  if pg_ok; then log "PostgreSQL answers on $pg_host:$pg_port"; return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  local ver; ver="$(ls /etc/postgresql | sort -V | tail -n1)"
  if ! port_open "$pg_host" "$pg_port"; then
    log "starting PostgreSQL $ver"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || as_root pg_ctlcluster "$ver" main start
  fi
  for _ in $(seq 1 60); do port_open "$pg_host" "$pg_port" && break; sleep 0.5; done
  if ! pg_ok; then
    # A fresh Debian cluster has no password for postgres and md5/scram on TCP.
    log "setting the postgres user's password for TCP logins"
    as_root runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
  fi
  pg_ok || { log "PostgreSQL does not accept postgres/postgres on $pg_host:$pg_port"; exit 1; }
  log "PostgreSQL answers on $pg_host:$pg_port"
}

ensure_database() {
  local db="$1"
  if [ "$(PGPASSWORD=postgres psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -Atqc "select 1 from pg_database where datname = '$db'")" != 1 ]; then
    PGPASSWORD=postgres psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -qc "CREATE DATABASE \"$db\"" >/dev/null
    log "database $db created"
  fi
}

tansu_bin() { command -v tansu || { [ -x "$HOME/.cargo/bin/tansu" ] && echo "$HOME/.cargo/bin/tansu"; } || true; }

broker_up() {
  if port_open "$kafka_host" "$kafka_port"; then log "Kafka-protocol broker answers on $kafka_host:$kafka_port"; return; fi
  local bin; bin="$(tansu_bin)"
  if [ -z "$bin" ]; then
    log "installing tansu $tansu_version from crates.io (a one-time build of ~25 min on 2 cores)"
    cargo install tansu --version "$tansu_version" --locked --features libsql --quiet
    bin="$(tansu_bin)"
  fi
  mkdir -p "$run_dir/tansu"
  log "starting tansu (SQLite storage in $run_dir/tansu)"
  # The SQLite path is relative to the working directory, hence the cd.
  (cd "$run_dir/tansu" && exec setsid "$bin" broker \
      --cluster-id carehub \
      --listener-url "tcp://$kafka_host:$kafka_port" \
      --advertised-listener-url "tcp://$kafka_host:$kafka_port" \
      --storage-engine "sqlite://tansu.db" \
      >"$run_dir/tansu/tansu.log" 2>&1 </dev/null & echo $! >"$run_dir/tansu/pid")
  for _ in $(seq 1 100); do port_open "$kafka_host" "$kafka_port" && break; sleep 0.1; done
  port_open "$kafka_host" "$kafka_port" || { log "tansu did not start; see $run_dir/tansu/tansu.log"; tail -n 20 "$run_dir/tansu/tansu.log" >&2; exit 1; }
  log "Kafka-protocol broker answers on $kafka_host:$kafka_port"
}

broker_down() {
  local pidfile="$run_dir/tansu/pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"; rm -f "$pidfile"; log "tansu stopped"
  else
    log "no tansu started by this script is running"
  fi
}

dicom_tools_up() {
  command -v echoscu >/dev/null || apt_install dcmtk
}

case "${1:-up}" in
  up) postgres_up; ensure_database carehub; broker_up; dicom_tools_up ;;
  down) broker_down ;;
  status)
    pg_ok && log "PostgreSQL: up" || log "PostgreSQL: down"
    port_open "$kafka_host" "$kafka_port" && log "broker: up" || log "broker: down" ;;
  *) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac
