#!/usr/bin/env bash
# bench/run.sh -- benchmark tallyd against nginx (a fixed reply on the same routes: the
# machine's ceiling), a plain Node.js collector (node:http + ioredis, two processes) and webdis
# (one Redis command per request, one script of 20 HINCRBYs per 20-event batch), with
# exact-count checks.
#
#   bench/run.sh           full run: every scenario, 3 rounds of 5 s runs (about 24 min, 2 cores)
#   bench/run.sh --quick   smoke test: fewer scenarios, 1 round of 2 s runs (about 1 minute)
#
# From a clean clone, as root: installs what is missing (scripts/deps.sh --bench: tally's
# packages, wrk, nginx-light, webdis, nodejs and npm; the Node collector's ioredis with npm ci),
# builds tallyd in Release mode into build-bench/, starts on loopback ports that are free a
# private redis-server, nginx, the Node collector and webdis (and a tallyd per run), runs the wrk
# scenarios interleaved (tally, nginx, node, webdis, tally, ...), and prints one table of medians;
# also written to bench/results/latest.md. Everything started is stopped by its PID at the end,
# also on failure or Ctrl-C.
#
# Exit status: 0, or 1 when tally's counts differed from what its 200 answers acknowledged in
# any run (a missed performance target does not fail the run), 2 on a usage error.
#
# Environment (defaults in brackets; --quick changes the first two and the scenario set):
#   BENCH_ROUNDS [3]          rounds; each scenario's runs are interleaved over the rounds
#   BENCH_DURATION [5]        seconds per wrk run (whole seconds)
#   BENCH_DRAIN [0.5]         quiet tail: the last seconds of each run send nothing new, so every
#                             request is answered before wrk stops (see lua/common.lua)
#   BENCH_ARTICLES [10000]    distinct articles
#   BENCH_VISITORS [50000]    dedupe scenario: X-Forwarded-For drawn from this many addresses
#                             (0: a new address on every request)
#   BENCH_WRK_THREADS [2]     wrk threads
#   BENCH_TALLY_THREADS [2]   tallyd --threads (also the Node collector's processes)
#   BENCH_IDLE_CONNS [10000]  idle connections for the RSS measurement
#   BENCH_ONLY                a regular expression: run only scenarios whose name matches
#   BENCH_KEEP [0]            1: keep the temporary directory (logs, configs, raw outputs)
#   BENCH_DIRECT [1]          1: also run tallyd on the direct path (--fold-interval 0: every
#                             unit counted at once) beside the journal path (--fold-interval
#                             200, its default), as the target tally-direct; 0: journal only
#   BENCH_FOLD_INTERVAL [200] the tally target's --fold-interval (ms, above 0), to measure
#                             another fold window than the default
#   BENCH_TARGETS             the targets to run, of: tally tally-direct nginx node webdis
#                             (default: all of them; e.g. "tally tally-direct" to compare two
#                             builds of tallyd)
#   BENCH_SLOWLOG [0]         1: Redis logs every command clients send (slowlog-log-slower-than
#                             0) during the tally runs, and the report shows Redis's time per
#                             event in each of tally's scripts (ack, merged, fold, apply, reclaim); it
#                             costs Redis a little time of its own
#   BENCH_FOLD_WAIT [30]      seconds to wait after a journal run until every journal is folded
#   BENCH_TALLYD              use this tallyd binary instead of building build-bench/ (e.g. while
#                             the work tree does not build)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=(python3 "$HERE/bench.py")

QUICK=0
for arg in "$@"; do
    case "$arg" in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "run.sh: unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

if [ "$QUICK" -eq 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    DURATION=${BENCH_DURATION:-2}
    DRAIN=${BENCH_DRAIN:-0.4}
else
    ROUNDS=${BENCH_ROUNDS:-3}
    DURATION=${BENCH_DURATION:-5}
    DRAIN=${BENCH_DRAIN:-0.5}
fi
ARTICLES=${BENCH_ARTICLES:-10000}
VISITORS=${BENCH_VISITORS:-50000}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
TALLY_THREADS=${BENCH_TALLY_THREADS:-2}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
ONLY=${BENCH_ONLY:-}
KEEP=${BENCH_KEEP:-0}
DIRECT=${BENCH_DIRECT:-1}
FOLD_WAIT=${BENCH_FOLD_WAIT:-30}
FOLD_INTERVAL=${BENCH_FOLD_INTERVAL:-200}
SLOWLOG=${BENCH_SLOWLOG:-0}

for v in ROUNDS DURATION ARTICLES VISITORS WRK_THREADS TALLY_THREADS IDLE_CONNS FOLD_WAIT \
    FOLD_INTERVAL; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || { [ "${!v}" -eq 0 ] && [ "$v" != VISITORS ]; }; then
        echo "run.sh: BENCH_$v must be a positive whole number, not '${!v}'" >&2
        exit 2
    fi
done
if ! [[ $DRAIN =~ ^[0-9]*\.?[0-9]+$ ]] || ! awk -v d="$DRAIN" -v t="$DURATION" 'BEGIN { exit !(d > 0 && d < t / 2) }'; then
    echo "run.sh: BENCH_DRAIN must be a number of seconds above 0 and below half of BENCH_DURATION" >&2
    exit 2
fi

# Scenarios: name|lua script|connections|articles|extra wrk-script arguments|in --quick.
# Every scenario runs against every target. Names matter to bench.py's targets.
SCENARIOS=(
    "healthz|healthz|64|$ARTICLES||1"
    "view-uniform|view_uniform|64|$ARTICLES||1"
    "view-uniform|view_uniform|256|$ARTICLES||0"
    "view-zipf|view_uniform|64|$ARTICLES|dist=zipf|1"
    "view-zipf|view_uniform|256|$ARTICLES|dist=zipf|0"
    "batch20|batch20|64|$ARTICLES||1"
    "batch20|batch20|256|$ARTICLES||0"
    "pixel|pixel|64|$ARTICLES||1"
    "stats-cold|stats|64|$ARTICLES||0"
    "stats-hot|stats|64|$ARTICLES|hot=1|1"
    "stats-hot|stats|256|$ARTICLES|hot=1|0"
    "dedupe|dedupe|64|$ARTICLES|visitors=$VISITORS|1"
    "embed|embed|64|$ARTICLES|dist=zipf|1"
    "embed|embed|256|$ARTICLES|dist=zipf|0"
    "view-uniform-100|view_uniform|64|100||0"
    "view-uniform-1M|view_uniform|64|1000000||0"
)
# tally: the journal path (acknowledge by appending, count by folding: --fold-interval 200);
# tally-direct: --fold-interval 0, every unit counted before its 200.
TARGET_ORDER=(tally nginx node webdis)
if [ "$DIRECT" = 1 ]; then TARGET_ORDER=(tally tally-direct nginx node webdis); fi
if [ -n "${BENCH_TARGETS:-}" ]; then
    read -r -a TARGET_ORDER <<<"$BENCH_TARGETS"
    for t in "${TARGET_ORDER[@]}"; do
        case "$t" in
        tally | tally-direct | nginx | node | webdis) ;;
        *)
            echo "run.sh: BENCH_TARGETS: unknown target '$t'" >&2
            exit 2
            ;;
        esac
    done
fi
HOT_SEED=100 # views of the hot article written before a stats-hot run

say() { printf '%s\n' "$*"; }
die() {
    printf 'run.sh: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- dependencies and build

install_deps() {
    # Without starting the system services of nginx or webdis: this script uses its own
    # configurations and free ports.
    bash "$ROOT/scripts/deps.sh" --bench
    if [ ! -d "$HERE/node/node_modules/ioredis" ]; then
        say "installing the Node collector's ioredis (npm ci in bench/node/)"
        (cd "$HERE/node" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci in bench/node failed"
    fi
}

build_tally() {
    if [ -n "${BENCH_TALLYD:-}" ]; then
        TALLYD=$BENCH_TALLYD
        [ -x "$TALLYD" ] || die "BENCH_TALLYD=$TALLYD is not an executable"
        say "using $TALLYD (not building)"
        return
    fi
    say "building tallyd (Release) in build-bench/"
    cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$ROOT/build-bench" -j "$(nproc)" >"$ROOT/build-bench/bench-build.log" 2>&1 ||
        {
            tail -n 30 "$ROOT/build-bench/bench-build.log" >&2
            die "build failed"
        }
    TALLYD="$ROOT/build-bench/tallyd"
    [ -x "$TALLYD" ] || die "no $TALLYD after the build"
}

# ---------------------------------------------------------------- processes

WORK=""
REDIS_PID=""
NGINX_PID=""
WEBDIS_PID=""
NODE_PID=""
TALLY_PID=""
WRK_PID=""
IDLE_PID=""

stop_pid() { # stop_pid PID NAME: TERM, wait up to 10 s, then KILL
    local pid=$1 name=$2 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
        if [ "$i" -eq 100 ]; then
            say "  $name (pid $pid) did not stop in 10 s: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID" wrk
    stop_pid "$IDLE_PID" "idle-connection helper"
    stop_pid "$TALLY_PID" tallyd
    stop_pid "$WEBDIS_PID" webdis
    stop_pid "$NODE_PID" "Node collector"
    stop_pid "$NGINX_PID" nginx
    stop_pid "$REDIS_PID" redis-server
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        # Kept after a failure (not after Ctrl-C) for its logs and raw outputs.
        if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
            say "kept logs and raw outputs in $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() { # wait_for PID NAME COMMAND...: until COMMAND succeeds, for up to 10 s
    local pid=$1 name=$2 i
    shift 2
    for i in $(seq 200); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited at start (see $WORK)"
        if [ "$i" -lt 200 ]; then sleep 0.05; fi
    done
    die "$name did not become ready in 10 s (see $WORK)"
}

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

start_redis() {
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/redis" --daemonize no --protected-mode no --databases 4 \
        --logfile "$WORK/redis/redis.log" &
    REDIS_PID=$!
    wait_for "$REDIS_PID" redis-server rcli ping
    # The admin step of every deploy: tallyd calls the functions it does not load itself.
    "$TALLYD" --load-functions --redis "redis://127.0.0.1:$REDIS_PORT/0" >/dev/null ||
        die "tallyd --load-functions failed"
}

start_nginx() {
    local d="$WORK/nginx"
    mkdir -p "$d/tmp"
    chmod 755 "$WORK" "$d" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# The machine's ceiling: a fixed answer on tally's routes, nothing else.
worker_processes 2;
worker_rlimit_nofile 16384;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    default_type application/json;
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        location = /v1/events { return 200 '{"accepted":1,"ignored":0}\n'; }
        location = /v1/pixel.gif { add_header Cache-Control no-store; empty_gif; }
        location /v1/stats/ {
            return 200 '{"article":"news/2025/article-1","views":100,"visitors":1,"shares":0,"shares_by_network":{},"comments":0}\n';
        }
        location = /v1/stats {
            return 200 '{"articles":[{"article":"news/2025/article-1","views":100,"visitors":1,"shares":0,"shares_by_network":{},"comments":0,"engaged_seconds":0,"reads":0,"words":1200}]}\n';
        }
        location = /healthz { return 200 '{"status":"ok"}\n'; }
    }
}
EOF
    nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' &
    NGINX_PID=$!
    wait_for "$NGINX_PID" nginx curl -fsS "http://127.0.0.1:$NGINX_PORT/healthz"
    local gif
    gif=$(curl -fsS "http://127.0.0.1:$NGINX_PORT/v1/pixel.gif" | wc -c)
    [ "$gif" -eq 43 ] || die "nginx's pixel is $gif bytes, not 43"
}

start_webdis() {
    local d="$WORK/webdis"
    mkdir -p "$d"
    # Database 1 of the same Redis (tally uses 0); no command that could harm the bench.
    cat >"$d/webdis.json" <<EOF
{
    "redis_host": "127.0.0.1",
    "redis_port": $REDIS_PORT,
    "redis_auth": null,
    "http_host": "127.0.0.1",
    "http_port": $WEBDIS_PORT,
    "threads": 2,
    "pool_size": 20,
    "daemonize": false,
    "websockets": false,
    "database": 1,
    "acl": [ { "disabled": ["DEBUG", "FLUSHALL", "FLUSHDB", "CONFIG", "SHUTDOWN", "KEYS"] } ],
    "verbosity": 1,
    "logfile": "$d/webdis.log"
}
EOF
    webdis "$d/webdis.json" &
    WEBDIS_PID=$!
    wait_for "$WEBDIS_PID" webdis curl -fsS "http://127.0.0.1:$WEBDIS_PORT/PING"
}

start_node() {
    # Database 2 of the same Redis; as many processes as tallyd has threads.
    node "$HERE/node/collector.js" "$NODE_PORT" "$REDIS_PORT" 2 "$TALLY_THREADS" \
        >>"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    wait_for "$NODE_PID" "Node collector" curl -fsS "http://127.0.0.1:$NODE_PORT/healthz"
}

# The script webdis runs for a batch: one HINCRBY per key (KEYS) and field (ARGV).
WEBDIS_BATCH_LUA="for i, k in ipairs(KEYS) do redis.call('HINCRBY', k, ARGV[i], 1) end return #KEYS"

TALLY_SEQ=0
start_tally() { # start_tally EXTRA-FLAGS...: a fresh tallyd with a fresh prefix
    TALLY_SEQ=$((TALLY_SEQ + 1))
    TALLY_PREFIX="bench$TALLY_SEQ:"
    "$TALLYD" --listen "127.0.0.1:$TALLY_PORT" --redis "redis://127.0.0.1:$REDIS_PORT/0" \
        --threads "$TALLY_THREADS" --rate-limit 0 --view-window 0 --token "$TOKEN" \
        --prefix "$TALLY_PREFIX" --log-level warn "$@" >>"$WORK/tallyd.log" 2>&1 &
    TALLY_PID=$!
    wait_for "$TALLY_PID" tallyd curl -fsS "http://127.0.0.1:$TALLY_PORT/readyz"
}

stop_tally() {
    stop_pid "$TALLY_PID" tallyd
    TALLY_PID=""
}

# ---------------------------------------------------------------- one run

UA='Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
RUN=0

snapshot() { # snapshot FILE: Redis command counts
    rcli INFO commandstats | tr -d '\r' >"$1"
}

server_pid() { # server_pid TARGET: the PID of the server's (first) process
    case "$1" in
    tally | tally-direct) echo "$TALLY_PID" ;;
    nginx) echo "$NGINX_PID" ;;
    node) echo "$NODE_PID" ;;
    webdis) echo "$WEBDIS_PID" ;;
    esac
}

wait_folded() { # wait_folded FILE: until the journals' registry of this tallyd is empty; the
    # seconds it took into FILE (-1 when it was not empty within BENCH_FOLD_WAIT seconds)
    local registry="${TALLY_PREFIX}{00}r:journals" t0 i n
    t0=$(date +%s.%N)
    for i in $(seq $((FOLD_WAIT * 50))); do
        n=$(rcli ZCARD "$registry")
        if [ "$n" = 0 ]; then
            awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f\n", b - a }' >"$1"
            return 0
        fi
        sleep 0.02
    done
    say "  the journals of $TALLY_PREFIX were not folded within $FOLD_WAIT s" >&2
    echo -1 >"$1"
}

cpu_sample() { # cpu_sample BASE.WHEN: server, Redis and whole-machine CPU so far, in one go
    "${PY[@]}" sample "$1" "$(server_pid "$TARGET_NOW")" "$REDIS_PID"
}

run_one() { # run_one ROUND SCENARIO-SPEC TARGET
    local round=$1 spec=$2 target=$3
    local name script conns articles extra _quick
    IFS='|' read -r name script conns articles extra _quick <<<"$spec"
    RUN=$((RUN + 1))
    local base
    base="$WORK/runs/$(printf '%03d' "$RUN")-$name-c$conns-$target"
    local counting=1 dedupe=0 seeded=0 url
    case "$name" in
    stats-* | healthz) counting=0 ;;
    esac

    rcli FLUSHALL >/dev/null
    case "$target" in
    tally | tally-direct)
        local path=(--fold-interval "$FOLD_INTERVAL")
        if [ "$target" = tally-direct ]; then path=(--fold-interval 0); fi
        if [ "$name" = dedupe ]; then
            dedupe=1
            start_tally "${path[@]}" --view-window 1800 --trust-proxy 127.0.0.1
        else
            start_tally "${path[@]}"
        fi
        url="http://127.0.0.1:$TALLY_PORT"
        ;;
    nginx) url="http://127.0.0.1:$NGINX_PORT" ;;
    node) url="http://127.0.0.1:$NODE_PORT" ;;
    webdis) url="http://127.0.0.1:$WEBDIS_PORT" ;;
    esac
    TARGET_NOW=$target
    if [ "$name" = stats-hot ]; then
        seeded=$HOT_SEED
        if [ "$target" = tally ] || [ "$target" = tally-direct ]; then
            local body i
            body="["
            for i in $(seq "$HOT_SEED"); do
                if [ "$i" -gt 1 ]; then body+=","; fi
                body+='{"type":"view","article":"news/2025/article-1"}'
            done
            body+="]"
            curl -fsS "$url/v1/events" -A "$UA" -H 'Content-Type: application/json' -d "$body" |
                grep -q "\"accepted\":$HOT_SEED," || die "seeding the hot article failed"
        elif [ "$target" = webdis ]; then
            rcli -n 1 HSET bench:1 views "$HOT_SEED" >/dev/null
        elif [ "$target" = node ]; then
            rcli -n 2 HSET bench:news/2025/article-1 views "$HOT_SEED" >/dev/null
        fi
    fi

    local slow=0
    if [ "$SLOWLOG" = 1 ] && { [ "$target" = tally ] || [ "$target" = tally-direct ]; }; then
        slow=1
        rcli CONFIG SET slowlog-max-len 1000000 >/dev/null
        rcli CONFIG SET slowlog-log-slower-than 0 >/dev/null
        rcli SLOWLOG RESET >/dev/null
    fi
    snapshot "$base.before"
    cpu_sample "$base.before"
    # wrk runs under bench.py, which writes its CPU seconds (from wait4) to $base.wrk-cpu.
    # shellcheck disable=SC2086 # $extra is zero or more key=value words
    "${PY[@]}" wrk "$base.wrk-cpu" wrk -t "$WRK_THREADS" -c "$conns" -d "${DURATION}s" --timeout 5s \
        -s "$HERE/lua/$script.lua" "$url" -- "target=$target" "articles=$articles" \
        "duration=$DURATION" "drain=$DRAIN" "sha=$WEBDIS_SHA" $extra >"$base.wrk" 2>&1 &
    WRK_PID=$!
    local rc=0
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    # The journal path counts after the 200s: Redis's CPU for these events includes the folds,
    # so the run ends when every journal is folded and gone from the registry.
    if [ "$target" = tally ]; then wait_folded "$base.fold-wait"; fi
    snapshot "$base.after"
    cpu_sample "$base.after"
    if [ "$slow" = 1 ]; then
        rcli CONFIG SET slowlog-log-slower-than 10000 >/dev/null
        "${PY[@]}" slowlog "$REDIS_PORT" >"$base.slowlog" || true
        rcli SLOWLOG RESET >/dev/null
    fi
    [ "$rc" -eq 0 ] || say "  wrk exited with status $rc (see $base.wrk)" >&2

    local rec=(--out "$RESULTS" --round "$round" --scenario "$name" --conns "$conns"
        --articles "$articles" --target "$target" --duration "$DURATION" --drain "$DRAIN"
        --counting "$counting" --dedupe "$dedupe" --seeded "$seeded"
        --wrk "$base.wrk" --before "$base.before" --after "$base.after"
        --cpu-before "$base.before.cpu" --cpu-after "$base.after.cpu"
        --redis-cpu-before "$base.before.redis-cpu" --redis-cpu-after "$base.after.redis-cpu"
        --machine-before "$base.before.machine" --machine-after "$base.after.machine"
        --wrk-cpu "$base.wrk-cpu" --fold-wait "$base.fold-wait")
    if [ "$slow" = 1 ]; then rec+=(--slowlog "$base.slowlog"); fi
    if [ "$target" = tally ] || [ "$target" = tally-direct ]; then
        curl -fsS "$url/v1/totals?period=all" >"$base.totals" 2>>"$base.err" || true
        curl -fsS "$url/metrics" >"$base.metrics" 2>>"$base.err" || true
        awk '/^VmHWM:/ { print $2 }' "/proc/$TALLY_PID/status" >"$base.hwm" 2>/dev/null || true
        stop_tally
        rec+=(--totals "$base.totals" --metrics "$base.metrics" --hwm "$base.hwm")
    elif [ "$target" = webdis ] || [ "$target" = node ]; then
        # Every counter of every bench:* hash of the target's database.
        rcli -n "$([ "$target" = webdis ] && echo 1 || echo 2)" EVAL "local s = 0
for _, k in ipairs(redis.call('KEYS', 'bench:*')) do
    for _, v in ipairs(redis.call('HVALS', k)) do s = s + (tonumber(v) or 0) end
end
return s" 0 >"$base.sum" || true
        rec+=(--counter-sum "$base.sum")
    fi
    "${PY[@]}" record "${rec[@]}"
}

# ---------------------------------------------------------------- main

START=$(date +%s)
install_deps
build_tally

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")
mkdir -p "$WORK/runs" "$HERE/results"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
TOKEN="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

mapfile -t PORTS < <("${PY[@]}" ports 5)
REDIS_PORT=${PORTS[0]}
TALLY_PORT=${PORTS[1]}
NGINX_PORT=${PORTS[2]}
WEBDIS_PORT=${PORTS[3]}
NODE_PORT=${PORTS[4]}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

start_redis
start_nginx
start_webdis
start_node
WEBDIS_SHA=$(rcli SCRIPT LOAD "$WEBDIS_BATCH_LUA")
say "redis :$REDIS_PORT (pid $REDIS_PID), nginx :$NGINX_PORT (pid $NGINX_PID), node :$NODE_PORT (pid $NODE_PID), webdis :$WEBDIS_PORT (pid $WEBDIS_PID), tallyd :$TALLY_PORT (one per run); work dir $WORK"
say "load average before: $LOAD_BEFORE"

# The scenarios of this run.
PLAN=()
for spec in "${SCENARIOS[@]}"; do
    IFS='|' read -r name _ _ _ _ quick <<<"$spec"
    [ "$QUICK" -eq 0 ] || [ "$quick" = 1 ] || continue
    [ -z "$ONLY" ] || [[ $name =~ $ONLY ]] || continue
    PLAN+=("$spec")
done
[ "${#PLAN[@]}" -gt 0 ] || die "no scenario matches BENCH_ONLY='$ONLY'"

# Memory: tallyd's RSS with idle keep-alive connections.
say "tallyd RSS with $IDLE_CONNS idle connections:"
# Room for all of them whichever worker the kernel hands each to.
start_tally --max-connections $((2 * IDLE_CONNS + 64))
"${PY[@]}" idle --port "$TALLY_PORT" --pid "$TALLY_PID" --n "$IDLE_CONNS" >"$WORK/rss.json" &
IDLE_PID=$!
wait "$IDLE_PID" || die "the idle-connection helper failed"
IDLE_PID=""
stop_tally
say "  $(cat "$WORK/rss.json")"

runs=$((${#PLAN[@]} * ${#TARGET_ORDER[@]} * ROUNDS))
say "$runs runs of ${DURATION} s: ${#PLAN[@]} scenarios x ${#TARGET_ORDER[@]} targets x $ROUNDS rounds, interleaved"
for round in $(seq "$ROUNDS"); do
    for spec in "${PLAN[@]}"; do
        for target in "${TARGET_ORDER[@]}"; do
            run_one "$round" "$spec" "$target"
        done
    done
done

ELAPSED=$(($(date +%s) - START))
cat >"$WORK/meta.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)", "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)",
 "mode": "$([ "$QUICK" -eq 1 ] && echo quick || echo full)", "rounds": $ROUNDS, "seconds per run": $DURATION,
 "articles": $ARTICLES, "wrk threads": $WRK_THREADS, "tallyd threads": $TALLY_THREADS, "cores": $(nproc),
 "wall time s": $ELAPSED, "load average before": "$LOAD_BEFORE", "load average after": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF
status=0
"${PY[@]}" report "$RESULTS" "$WORK/rss.json" "$HERE/results/latest.md" --meta "$WORK/meta.json" || status=$?
cp "$RESULTS" "$HERE/results/latest.jsonl"
say "total time: $((($(date +%s) - START) / 60)) min $((($(date +%s) - START) % 60)) s"
exit "$status"
