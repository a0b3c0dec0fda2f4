#!/usr/bin/env bash
# check-metrics.sh TALLYD -- check GET /metrics of a live tallyd, and the Grafana dashboard
# against it.
#
# Starts a redis-server of its own (free loopback port, no persistence, scratch directory) and
# TALLYD on another free port; sends events of every type and outcome (counted views, shares
# and a comment; a repeat view; bot and prefetch events; a bad request; a comment without the
# token; a stats read; a 404; and, after stopping Redis, a view that fails with a 503); then
# scrapes /metrics and requires:
#   - `promtool check metrics` to exit 0 with no output (lint warnings fail too),
#   - exact counter values for what was sent, and the families the dashboard relies on,
#   - tests/tools/check-grafana.py to pass on dashboards/grafana-tally.json with that scrape.
# Everything it starts is stopped by PID on exit. Needs curl, python3, redis-server (or
# $REDIS_SERVER) and promtool (or $PROMTOOL; Debian package `prometheus`).
# $GRAFANA_DASHBOARD checks another dashboard file instead (e.g. a deliberately broken copy).
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 <tallyd>" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
tallyd=$(realpath "$1")
dashboard=${GRAFANA_DASHBOARD:-$root/dashboards/grafana-tally.json}
checker="$here/check-grafana.py"

die() {
    echo "check-metrics: $*" >&2
    exit 1
}

[ -x "$tallyd" ] || die "$tallyd is not executable"
# A CMake cache value of <VAR>-NOTFOUND counts as unset.
[[ ${PROMTOOL:-} != *NOTFOUND ]] || unset PROMTOOL
[[ ${REDIS_SERVER:-} != *NOTFOUND ]] || unset REDIS_SERVER
promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ] || [ ! -x "$promtool" ]; then
    die "promtool not found: apt-get install --no-install-recommends prometheus (or set PROMTOOL)"
fi
redis_server=${REDIS_SERVER:-$(command -v redis-server || true)}
if [ -z "$redis_server" ] || [ ! -x "$redis_server" ]; then
    die "redis-server not found (install redis-server or set REDIS_SERVER)"
fi
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"
[ -f "$dashboard" ] || die "$dashboard is missing"

# Flags set everything that matters, but a stray TALLY_* variable must not change the rest.
while read -r var; do
    unset "$var"
done < <(compgen -v TALLY_ || true)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-metrics.XXXXXX")
redis_pid=""
tallyd_pid=""

# Stop PID (one we started): TERM, up to 10 s, then KILL.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT
    [ -z "$tallyd_pid" ] || stop_pid "$tallyd_pid"
    [ -z "$redis_pid" ] || stop_pid "$redis_pid"
    if [ "$status" -ne 0 ]; then
        for log in "$tmp/tallyd.log" "$tmp/redis.log"; do
            if [ -s "$log" ]; then
                echo "---- $(basename "$log") (last 40 lines) ----" >&2
                tail -n 40 "$log" >&2
            fi
        done
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT

# Two distinct loopback ports nobody listens on right now.
read -r redis_port http_port < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---- Redis ----
"$redis_server" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no >/dev/null 2>&1 &
redis_pid=$!
for ((i = 0; i < 100; i++)); do
    port_open "$redis_port" && break
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited at start"
    sleep 0.1
done
port_open "$redis_port" || die "redis-server did not listen on port $redis_port within 10 s"
# The admin step of every deploy: tallyd calls the functions it does not load itself (a Redis
# still loading answers LOADING: try again).
for ((i = 0; i < 50; i++)); do
    "$tallyd" --load-functions --redis "redis://127.0.0.1:$redis_port/0" >/dev/null 2>&1 && break
    sleep 0.1
done
"$tallyd" --load-functions --redis "redis://127.0.0.1:$redis_port/0" >/dev/null ||
    die "tallyd --load-functions failed"

# ---- tallyd ----
# One worker thread, so that the metrics below are one thread's, exactly. Its
# journal is folded only when a read asks (the interval is longer than the whole check), so
# the fold counts below are exact: the stats read folds everything acknowledged before it.
token="check-metrics-token1" # 20 characters
base="http://127.0.0.1:$http_port"
started_after=$(date +%s.%N)
"$tallyd" --listen "127.0.0.1:$http_port" --redis "redis://127.0.0.1:$redis_port/0" \
    --token "$token" --threads 1 --hold 200 --view-window 1800 --fold-interval 10000 \
    --log-level info >"$tmp/tallyd.log" 2>&1 &
tallyd_pid=$!

# Status of GET PATH (000 when nothing answers).
get_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base$1" || true
}

for ((i = 0; i < 100; i++)); do
    [ "$(get_status /readyz)" = 200 ] && break
    kill -0 "$tallyd_pid" 2>/dev/null || die "tallyd exited at start"
    sleep 0.1
done
[ "$(get_status /readyz)" = 200 ] || die "tallyd was not ready within 10 s"
started_before=$(date +%s.%N)

# req EXPECTED_STATUS PATH [curl options...]: send one request, require its status.
req() {
    local want=$1 path=$2 got
    shift 2
    got=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 10 "$@" "$base$path") ||
        die "request to $path failed"
    [ "$got" = "$want" ] || die "$path ($*): status $got, want $want: $(head -c 300 "$tmp/body")"
}

desktop='Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'
bot='Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
json='Content-Type: application/json'

# Counted: 3 views of distinct articles by a desktop browser, 1 pixel view, 2 shares and a
# comment with the token.
views=3
for ((i = 1; i <= views; i++)); do
    req 200 /v1/events -A "$desktop" -H "$json" -d "{\"type\":\"view\",\"article\":\"check/a$i\"}"
done
req 200 '/v1/pixel.gif?type=view&article=check/pixel' -A "$desktop"
counted_views=$((views + 1))
req 200 /v1/events -A "$desktop" -H "$json" \
    -d '[{"type":"share","article":"check/a1","network":"twitter"},{"type":"share","article":"check/a2","network":"email"}]'
req 200 /v1/events -H "Authorization: Bearer $token" -H "$json" \
    -d '{"type":"comment","article":"check/a1"}'
# Ignored: a repeat view (same browser, same article), 2 bot events, 1 prefetch.
req 200 /v1/events -A "$desktop" -H "$json" -d '{"type":"view","article":"check/a1"}'
grep -q '"repeat":1' "$tmp/body" || die "repeat view not reported as ignored: $(cat "$tmp/body")"
req 200 /v1/events -A "$bot" -H "$json" \
    -d '[{"type":"view","article":"check/a1"},{"type":"share","article":"check/a1","network":"reddit"}]'
grep -q '"bot":2' "$tmp/body" || die "bot events not reported as ignored: $(cat "$tmp/body")"
req 200 /v1/events -A "$desktop" -H 'Sec-Purpose: prefetch' -H "$json" \
    -d '{"type":"view","article":"check/a3"}'
grep -q '"prefetch":1' "$tmp/body" || die "prefetch not reported as ignored: $(cat "$tmp/body")"
# Rejected: a bad request (400) and a comment without the token (401).
req 400 /v1/events -A "$desktop" -H "$json" -d '{"type":"view","article":"has space"}'
req 401 /v1/events -A "$desktop" -H "$json" -d '{"type":"comment","article":"check/a1"}'
# Nothing is folded yet. Waiting: the events of every unit acknowledged but the comment, 7 --
# the 3 views, the pixel's, the 2 shares and the repeat view (bot and prefetch events never
# reach Redis). They made six journal entries, one per unit but the comment's: a comment delta
# is counted when acknowledged and makes no entry, and the repeat view's visitor still feeds
# the distinct-visitor estimate.
req 200 /metrics
grep -qx 'tally_journal_backlog_events 7' "$tmp/body" ||
    die "events waiting to be folded: $(grep '^tally_journal_backlog_events' "$tmp/body")"
grep -qx 'tally_folds_total 0' "$tmp/body" ||
    die "folds before the first read: $(grep '^tally_folds_total' "$tmp/body")"
# Reads: a stats read (200; it waits for the fold of everything acknowledged before it), an
# unknown path (404).
req 200 /v1/stats/check%2Fa1 -A "$desktop"
grep -q '"views":1' "$tmp/body" || die "stats of check/a1: $(cat "$tmp/body")"
req 200 /v1/totals -A "$desktop"
req 404 /no-such-page -A "$desktop"

# scrape FILE: GET /metrics into FILE; require the content type and a clean promtool lint.
scrape() {
    local file=$1 out status=0
    curl -sS -D "$file.headers" -o "$file" --max-time 10 "$base/metrics" || die "scrape failed"
    grep -qi '^content-type: text/plain; version=0.0.4' "$file.headers" ||
        die "/metrics content type: $(grep -i '^content-type' "$file.headers" || echo none)"
    out=$("$promtool" check metrics <"$file" 2>&1) || status=$?
    if [ "$status" -ne 0 ] || [ -n "$out" ]; then
        echo "$out" >&2
        die "promtool check metrics on $(basename "$file"): exit $status, output above"
    fi
}

# value FILE SERIES: the sample value of SERIES (exactly as written, labels in order).
value() {
    awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print "missing" }' "$1"
}

# expect FILE SERIES WANT
failures=0
checks=0
expect() {
    local got
    checks=$((checks + 1))
    got=$(value "$1" "$2")
    if [ "$got" != "$3" ]; then
        echo "check-metrics: $(basename "$1"): $2 is $got, want $3" >&2
        failures=$((failures + 1))
    fi
}

healthy="$tmp/healthy.prom"
scrape "$healthy"
expect "$healthy" tally_redis_up 1
expect "$healthy" tally_pending_events 0
expect "$healthy" tally_pending_requests 0
expect "$healthy" tally_folds_total 1
expect "$healthy" tally_fold_entries_total 6
expect "$healthy" tally_journal_backlog_events 0

# Failed: stop Redis, wait until tallyd sees it, then a view is held --hold ms and gets a 503.
stop_pid "$redis_pid"
redis_pid=""
for ((i = 0; i < 100; i++)); do
    [ "$(get_status /readyz)" = 503 ] && break
    sleep 0.1
done
[ "$(get_status /readyz)" = 503 ] || die "tallyd still ready 10 s after Redis stopped"
req 503 /v1/events -A "$desktop" -H "$json" -d '{"type":"view","article":"check/down"}'

final="$tmp/final.prom"
scrape "$final"
e=tally_events_total
expect "$final" "$e{type=\"view\",outcome=\"counted\"}" "$counted_views"
expect "$final" "$e{type=\"view\",outcome=\"ignored\"}" 3
expect "$final" "$e{type=\"view\",outcome=\"rejected\"}" 0
expect "$final" "$e{type=\"view\",outcome=\"failed\"}" 1
expect "$final" "$e{type=\"share\",outcome=\"counted\"}" 2
expect "$final" "$e{type=\"share\",outcome=\"ignored\"}" 1
expect "$final" "$e{type=\"comment\",outcome=\"counted\"}" 1
expect "$final" "$e{type=\"comment\",outcome=\"rejected\"}" 1
expect "$final" 'tally_events_ignored_total{reason="bot"}' 2
expect "$final" 'tally_events_ignored_total{reason="prefetch"}' 1
expect "$final" 'tally_events_ignored_total{reason="repeat"}' 1
expect "$final" 'tally_requests_rejected_total{reason="invalid"}' 1
expect "$final" 'tally_requests_rejected_total{reason="unauthorized"}' 1
expect "$final" 'tally_requests_rejected_total{reason="unavailable"}' 1
expect "$final" 'tally_requests_rejected_total{reason="rate_limited"}' 0
expect "$final" 'tally_http_requests_total{route="events",code="2xx"}' 8
expect "$final" 'tally_http_requests_total{route="events",code="4xx"}' 2
expect "$final" 'tally_http_requests_total{route="events",code="5xx"}' 1
expect "$final" 'tally_http_requests_total{route="pixel",code="2xx"}' 1
expect "$final" 'tally_http_requests_total{route="stats",code="2xx"}' 1
expect "$final" 'tally_http_requests_total{route="totals",code="2xx"}' 1
expect "$final" 'tally_http_requests_total{route="top",code="2xx"}' 0
expect "$final" 'tally_http_requests_total{route="other",code="4xx"}' 1
expect "$final" 'tally_http_requests_total{route="metrics",code="2xx"}' 2 # before the stats read, healthy
expect "$final" 'tally_http_request_duration_seconds_count{route="events"}' 11
expect "$final" 'tally_http_request_duration_seconds_bucket{route="events",le="+Inf"}' 11
expect "$final" tally_redis_up 0
expect "$final" tally_pending_events 0
expect "$final" tally_pending_requests 0
expect "$final" tally_requests_indeterminate_total 0
expect "$final" tally_reads_refused_total 0
expect "$final" tally_live_streams 0
expect "$final" tally_live_refused_total 0
expect "$final" 'tally_live_dropped_total{reason="slow"}' 0
expect "$final" 'tally_live_dropped_total{reason="overflow"}' 0
expect "$final" tally_folds_total 1
expect "$final" tally_fold_entries_total 6
expect "$final" tally_fold_errors_total 0
expect "$final" tally_fold_stale_total 0
expect "$final" tally_fold_chunks_total 0
expect "$final" tally_fold_skipped_commands_total 0
expect "$final" tally_journal_reclaimed_entries_total 0
expect "$final" tally_journal_reclaimed_chunks_total 0
expect "$final" tally_journal_refused_total 0
expect "$final" tally_forget_steps_total 0
expect "$final" tally_journal_backlog_events 0
expect "$final" tally_writes_at_once_total 0 # check/down was never read
expect "$final" tally_write_skipped_commands_total 0

# Every family the dashboard and the docs rely on, with its type.
families=(
    "tally_events_total counter" "tally_events_ignored_total counter"
    "tally_requests_rejected_total counter" "tally_http_requests_total counter"
    "tally_http_request_duration_seconds histogram" "tally_redis_roundtrips_total counter"
    "tally_redis_errors_total counter" "tally_redis_timeouts_total counter"
    "tally_redis_reconnects_total counter" "tally_redis_write_units_total counter"
    "tally_redis_write_unit_events_total counter" "tally_redis_write_units_fenced_total counter"
    "tally_requests_indeterminate_total counter"
    "tally_http_slow_clients_total counter" "tally_reads_refused_total counter"
    "tally_redis_up gauge"
    "tally_pending_events gauge" "tally_pending_requests gauge"
    "tally_http_connections gauge" "tally_live_streams gauge" "tally_live_articles gauge"
    "tally_live_reads_total counter" "tally_live_events_total counter"
    "tally_live_refused_total counter" "tally_live_dropped_total counter"
    "tally_folds_total counter" "tally_fold_entries_total counter"
    "tally_fold_errors_total counter" "tally_fold_stale_total counter"
    "tally_fold_skipped_commands_total counter" "tally_fold_chunks_total counter"
    "tally_journal_reclaimed_entries_total counter"
    "tally_journal_reclaimed_chunks_total counter" "tally_journal_refused_total counter"
    "tally_forget_steps_total counter"
    "tally_journal_backlog_events gauge" "tally_writes_at_once_total counter"
    "tally_write_skipped_commands_total counter"
    "process_cpu_seconds_total counter"
    "process_resident_memory_bytes gauge" "process_start_time_seconds gauge"
    "tally_build_info gauge"
)
for f in "${families[@]}"; do
    checks=$((checks + 1))
    grep -qx "# TYPE $f" "$final" || {
        echo "check-metrics: no '# TYPE $f' line" >&2
        failures=$((failures + 1))
    }
done

checks=$((checks + 3))
# Cumulative histogram: each route's buckets never decrease and +Inf equals _count.
awk '
    /^tally_http_request_duration_seconds_bucket\{/ {
        match($1, /route="[^"]*"/); r = substr($1, RSTART, RLENGTH)
        if (r in last && $2 + 0 < last[r]) { print "bucket decreases: " $1; bad = 1 }
        last[r] = $2 + 0
    }
    /^tally_http_request_duration_seconds_count\{/ {
        match($1, /route="[^"]*"/); r = substr($1, RSTART, RLENGTH)
        if (!(r in last) || last[r] != $2 + 0) { print "+Inf bucket != _count for " r; bad = 1 }
    }
    END { exit bad }' "$final" >&2 || failures=$((failures + 1))

# Write units carry every event written: at least the counted ones, at least one per unit.
units=$(value "$final" tally_redis_write_units_total)
unit_events=$(value "$final" tally_redis_write_unit_events_total)
counted=$((counted_views + 2 + 1))
if [ "$units" = missing ] || [ "$unit_events" = missing ] || [ "$units" -lt 1 ] ||
    [ "$unit_events" -lt "$counted" ] || [ "$unit_events" -lt "$units" ]; then
    echo "check-metrics: write units $units carrying $unit_events events (counted $counted)" >&2
    failures=$((failures + 1))
fi
# The start time to the microsecond, between the moments around the daemon's start.
checks=$((checks + 1))
start=$(sed -n 's/^process_start_time_seconds //p' "$final")
if ! [[ $start =~ ^[0-9]+\.[0-9]{6}$ ]] ||
    ! python3 -c 'import sys; a, s, b = map(float, sys.argv[1:]); sys.exit(not a <= s <= b)' \
        "$started_after" "$start" "$started_before"; then
    echo "check-metrics: process_start_time_seconds is '$start', not between $started_after" \
        "and $started_before to the microsecond" >&2
    failures=$((failures + 1))
fi
grep -q '^tally_build_info{version="[^"]\+",.*} 1$' "$final" || {
    echo "check-metrics: no tally_build_info{version=...} 1 sample" >&2
    failures=$((failures + 1))
}

[ "$failures" -eq 0 ] || die "$failures metric check(s) failed"
echo "check-metrics: /metrics passes promtool check metrics (twice) and $checks value checks"

# The dashboard, against this very scrape.
python3 "$checker" "$dashboard" "$promtool" "$final"
echo "check-metrics: OK"
