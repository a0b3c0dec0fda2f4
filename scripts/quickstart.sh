#!/usr/bin/env bash
# quickstart.sh -- install what is missing, build, and run tally with a private Redis and the
# demo pages. Everything it starts lives under .run/ in the checkout:
#   scripts/quickstart.sh          start (or restart) Redis and tallyd, print the demo URL
#   scripts/quickstart.sh stop     stop both
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/.run"
mkdir -p "$run/redis"

stop_pid() { # stop the process whose PID is in file $1, if it is still ours
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

free_port() { # the first port from $1 on that nothing listens on
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

stop_pid "$run/tallyd.pid"
stop_pid "$run/redis.pid"
if [ "${1:-}" = "stop" ]; then
    echo "stopped"
    exit 0
fi

"$top/scripts/deps.sh"
cmake -S "$top" -B "$top/build-release" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$top/build-release" -j"$(nproc)" >/dev/null

# A private Redis: loopback only, data under .run/redis, AOF on and fsynced on every write,
# on a port away from a system Redis's 6379.
redis_port=$(free_port 6390)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run/redis" --appendonly yes \
    --appendfsync always --save '' --daemonize yes --pidfile "$run/redis.pid" \
    --logfile "$run/redis.log"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# The admin step of every deploy: load tally's Redis functions, which tallyd calls.
"$top/build-release/tallyd" --load-functions --redis "redis://127.0.0.1:$redis_port/0" >/dev/null

[ -f "$run/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$run/token"
http_port=$(free_port 8080)
TALLY_TOKEN=$(cat "$run/token") nohup "$top/build-release/tallyd" \
    --listen "127.0.0.1:$http_port" --redis "redis://127.0.0.1:$redis_port/0" --demo \
    >>"$run/tallyd.log" 2>&1 &
echo $! >"$run/tallyd.pid"
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null

cat <<MSG
tally is running.
  demo article:  http://127.0.0.1:$http_port/demo/
  list page:     http://127.0.0.1:$http_port/demo/list
  collector:     http://127.0.0.1:$http_port   (Redis on 127.0.0.1:$redis_port, data in .run/redis)
  token:         $(cat "$run/token")   (also in .run/token)
  logs:          .run/tallyd.log, .run/redis.log
  stop:          scripts/quickstart.sh stop
MSG
