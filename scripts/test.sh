#!/usr/bin/env bash
# Runs every profwatch test: unit tests, the Store contract suite on both stores, and the
# end-to-end tests against the real binary. Installs and starts the ClickHouse server the tests
# need (Debian's clickhouse-server, via scripts/clickhouse.sh) and stops it afterwards if it
# started it.
set -euo pipefail
cd "$(dirname "$0")/.."

# curl (for the ClickHouse script), Debian's Chromium + ChromeDriver (for the dashboard's
# browser test), Go (`go tool pprof` reads the pprof the collector exports) and gcc (the native
# program the sidecar's unwinding test profiles), installed when missing.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

url="$(scripts/clickhouse.sh url)"
started_here=0
if [ "$(curl -s --max-time 2 "$url/ping" || true)" != "Ok." ]; then
    scripts/clickhouse.sh start
    started_here=1
fi
stop() { if [ "$started_here" = 1 ]; then scripts/clickhouse.sh stop || true; fi; }
trap stop EXIT

export PROFWATCH_TEST_CLICKHOUSE_URL="$url"
export PROFWATCH_TEST_REQUIRE_GO=1

# Every skip is recorded here (profwatch-testkit) and tallied at the end, pass or fail.
skip_log="$(mktemp -t profwatch-skips.XXXXXX)"
export PROFWATCH_SKIP_LOG="$skip_log"
tally() {
    local n
    n=$(wc -l <"$skip_log")
    echo
    echo "== skipped tests: $n"
    if [ "$n" -gt 0 ]; then
        cut -f1 "$skip_log" | sort | uniq -c | sed 's/^ */   /; s/ /  /'
        echo "   (which tests: $skip_log)"
    fi
}

cargo build -p profwatch
# --no-fail-fast: a failing test binary does not hide the results of the ones after it.
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
# A current ClickHouse engine: PyPI's chdb-core (26.x, in-process) behind a test-only ClickHouse
# HTTP front (store/tests/chdb/front.py says what it emulates); the contract suite's
# single-server cases run through it: the modern DDL, every query the store issues, answers
# checked as on 18.16. The cluster cases need real servers and stay on 18.16.
chdb_venv="${CARGO_TARGET_DIR:-target}/chdb-venv"
[ -x "$chdb_venv/bin/python" ] || python3 -m venv "$chdb_venv"
"$chdb_venv/bin/pip" install -q --disable-pip-version-check -r store/tests/chdb/requirements.txt
chdb_data="$(mktemp -d -t profwatch-chdb.XXXXXX)"
"$chdb_venv/bin/python" store/tests/chdb/front.py --port 0 --path "$chdb_data" >"$chdb_data.log" 2>&1 &
chdb_pid=$!
stop() {
    kill "$chdb_pid" 2>/dev/null || true
    rm -rf "$chdb_data" "$chdb_data.log"
    if [ "$started_here" = 1 ]; then scripts/clickhouse.sh stop || true; fi
}
chdb_url=""
for _ in $(seq 1 120); do
    chdb_url="$(sed -n 's/^chdb front on \(http[^ ]*\) .*/\1/p' "$chdb_data.log")"
    [ -n "$chdb_url" ] && break
    sleep 0.5
done
if [ -z "$chdb_url" ]; then
    echo "the chDB front did not start:" >&2
    cat "$chdb_data.log" >&2
    status=1
else
    PROFWATCH_TEST_CLICKHOUSE_URL="$chdb_url" \
        cargo test -p profwatch-store --test contract --no-fail-fast -- --skip cluster || status=$?
    # What only a current server has: a retried keyed batch dropped by its deduplication token,
    # and the codecs migration 10 chose on every column it names.
    # (--exact: the run must name these tests and run them; fewer run is a failure.)
    dedup_log="$(mktemp -t profwatch-dedup.XXXXXX)"
    PROFWATCH_TEST_CLICKHOUSE_URL="$chdb_url" \
        cargo test -p profwatch-store --lib -- --exact \
        clickhouse::tests::a_keyed_batch_inserted_again_is_stored_once_where_the_server_has_tokens \
        clickhouse::tests::columns_carry_their_chosen_codecs_where_the_server_has_codecs \
        2>&1 | tee "$dedup_log" || status=$?
    grep -q "test result: ok. 2 passed" "$dedup_log" || { echo "the chDB dedup and codec tests did not run and pass" >&2; status=1; }
    rm -f "$dedup_log"
fi
# The Python SDK under real Django, Flask and FastAPI servers, through the binary just built.
agent/python/tests/run.sh || status=$?
tally
exit "$status"
