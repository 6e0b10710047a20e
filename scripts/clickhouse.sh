#!/usr/bin/env bash
# Starts, stops and locates a throwaway ClickHouse server for profwatch's tests.
#
#   scripts/clickhouse.sh start   # install if missing, start, wait for /ping (no-op if it answers)
#   scripts/clickhouse.sh stop    # stop the server this script started, and wait for it to exit
#   scripts/clickhouse.sh url     # print the HTTP URL, e.g. http://127.0.0.1:8123
#
# Everything lives in $PROFWATCH_CH_DIR (default /tmp/profwatch-clickhouse): config, data, logs,
# pid file. The server listens on $PROFWATCH_CH_HOST (127.0.0.1; tests that need a server of their
# own give it a loopback address of its own) only: HTTP on $PROFWATCH_CH_HTTP_PORT (8123), native
# TCP on $PROFWATCH_CH_TCP_PORT (19000). The `default` user has no password and is allowed from
# localhost only. The distribution's own service (systemd or init.d) is neither needed nor used.
#
# Tests then run with PROFWATCH_TEST_CLICKHOUSE_URL="$(scripts/clickhouse.sh url)".
set -euo pipefail

DIR="${PROFWATCH_CH_DIR:-/tmp/profwatch-clickhouse}"
HOST="${PROFWATCH_CH_HOST:-127.0.0.1}"
HTTP_PORT="${PROFWATCH_CH_HTTP_PORT:-8123}"
TCP_PORT="${PROFWATCH_CH_TCP_PORT:-19000}"
START_TIMEOUT="${PROFWATCH_CH_START_TIMEOUT:-60}"
URL="http://${HOST}:${HTTP_PORT}"
PID_FILE="$DIR/clickhouse-server.pid"
LOG_DIR="$DIR/log"

log() { printf 'clickhouse.sh: %s\n' "$*" >&2; }

answers() {
    [ "$(curl -s --max-time 2 "$URL/ping" 2>/dev/null || true)" = "Ok." ]
}

find_server() {
    local candidate
    for candidate in "$(command -v clickhouse-server 2>/dev/null || true)" \
        /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    # Upstream packages ship one `clickhouse` binary with a `server` mode.
    if command -v clickhouse >/dev/null 2>&1; then
        printf '%s server\n' "$(command -v clickhouse)"
        return 0
    fi
    return 1
}

install_server() {
    log "clickhouse-server is not installed; installing it with apt-get"
    if [ "$(id -u)" -ne 0 ]; then
        log "installing needs root; run: sudo apt-get install -y clickhouse-server clickhouse-client"
        exit 1
    fi
    # Keep the package's maintainer scripts from starting their own service: ours is separate.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    local status=0
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client; } || status=$?
    if [ "$created_policy" -eq 1 ]; then
        rm -f "$policy"
    fi
    if [ "$status" -ne 0 ]; then
        log "apt-get failed (exit $status)"
        exit "$status"
    fi
}

write_config() {
    mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$LOG_DIR"
    cat >"$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$LOG_DIR/clickhouse-server.log</log>
        <errorlog>$LOG_DIR/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>$HOST</listen_host>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$DIR/data/</path>
    <tmp_path>$DIR/tmp/</tmp_path>
    <user_files_path>$DIR/user_files/</user_files_path>
    <format_schema_path>$DIR/format_schemas/</format_schema_path>
    <users_config>$DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
    cat >"$DIR/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.0/8</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
}

running_pid() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

start() {
    if answers; then
        log "already answering at $URL"
        return 0
    fi
    command -v curl >/dev/null 2>&1 || {
        log "curl is needed to check the server; install it (apt-get install -y curl)"
        exit 1
    }
    local server
    if ! server="$(find_server)"; then
        install_server
        server="$(find_server)" || {
            log "clickhouse-server still not found after installing"
            exit 1
        }
    fi
    if pid="$(running_pid)"; then
        log "a server started earlier (pid $pid) is running but not answering; stopping it first"
        stop
    fi
    write_config
    log "starting $server (state in $DIR)"
    # shellcheck disable=SC2086 # $server may be "clickhouse server" on purpose
    nohup $server --config-file="$DIR/config.xml" \
        >"$LOG_DIR/stdout.log" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ! answers; do
        if ! running_pid >/dev/null; then
            log "the server exited during start-up; last log lines:"
            tail -n 40 "$LOG_DIR/stdout.log" "$LOG_DIR/clickhouse-server.err.log" >&2 2>/dev/null || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "no answer at $URL/ping after ${START_TIMEOUT}s; last log lines:"
            tail -n 40 "$LOG_DIR/stdout.log" "$LOG_DIR/clickhouse-server.err.log" \
                "$LOG_DIR/clickhouse-server.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
    log "ready at $URL (pid $(cat "$PID_FILE"))"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "not running (no live pid in $PID_FILE)"
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "pid $pid did not exit within 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
url) printf '%s\n' "$URL" ;;
*)
    echo "usage: $0 start|stop|url" >&2
    exit 2
    ;;
esac
