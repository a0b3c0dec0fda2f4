#!/usr/bin/env bash
# check-deploy.sh TALLYD -- offline checks of the deployment files in deploy/.
#
# TALLYD is a built tallyd. Every check runs without network, Docker or a cluster:
#   systemd     systemd-analyze verify (silent) and security --offline (exposure <= 2.0)
#   env         deploy/tallyd.env names every tallyd variable and nothing else, and tallyd
#               starts with its values (healthz, healthcheck, SIGTERM exit 0)
#   redis       deploy/redis.conf runs, its ACL refuses foreign commands and keys, scripts,
#               function loading, other databases; tallyd --load-functions as an admin, then
#               tallyd with tallyd.env's Redis URL does every Redis operation through it
#   dockerfile  static rules, the builder stage's sources and flags build tallyd, and the
#               runtime stage installs every library that tallyd links
#   compose     docker-compose config -q, hardening keys, tallyd accepts its environment
#   kubernetes  yamllint, kubernetes-models schemas and tally's rules, tallyd accepts the
#               ConfigMap and Secret
#   nginx       nginx -t on a wrapper, then a live proxy: redirect, TLS, 413, cached tally.js
#
# TALLY_DEPLOY_DIR=DIR checks another copy of deploy/ (used to show that breaks are caught).
# Needs: systemd (systemd-analyze), nginx-light, docker-compose, yamllint, openssl, curl,
# redis-server, cmake and a C compiler, node with `npm ci` run in tests/tools/deploy.
# Ends with "N passed, N failed"; exits 1 if any check failed.
set -euo pipefail

if [[ $# -ne 1 || ! -x $1 ]]; then
    echo "usage: $0 PATH-TO-BUILT-TALLYD" >&2
    exit 2
fi
tallyd=$(readlink -f "$1")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
deploy=$(readlink -f "${TALLY_DEPLOY_DIR:-$root/deploy}")
tools=$root/tests/tools/deploy
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
# A stand-in for the token placeholder: 24 characters, as `openssl rand -hex 12` would give.
token=check-deploy-0123456789ab
pids=()

# Every check runs in a subshell and stops what it started when it ends, passed or failed.
stop_started() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap 'rm -rf "$tmp"' EXIT

# ---- helpers ----

problem() {
    echo "  $*" >&2
    return 1
}

# need COMMAND PACKAGE: fail the check with a hint when a tool is missing.
need() {
    command -v "$1" >/dev/null || problem "$1 not found (apt-get install $2)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_code URL [CURL-ARGS...]: the status code, 000 when nothing answered.
http_code() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}

expect_code() { # WANT URL [CURL-ARGS...]
    local want=$1 got
    shift
    got=$(http_code "$@")
    [[ $got == "$want" ]] || problem "$(printf '%.150s' "$*") answered $got, expected $want"
}

for c in curl python3 timeout; do
    command -v "$c" >/dev/null || { echo "$0: $c not found" >&2; exit 1; }
done

# The TALLY_* variables tallyd knows, from its --help.
"$tallyd" --help | grep -oE 'env TALLY_[A-Z_]+' | sed 's/^env //' | sort -u >"$tmp/flags"
[[ -s $tmp/flags ]] || { echo "cannot read the variables from $tallyd --help" >&2; exit 1; }

# start_tallyd NAME ENVFILE [FLAGS...]: start tallyd in the background with the shell
# assignments of ENVFILE (and nothing else of the caller's TALLY_* variables), the token
# placeholder replaced, on a kernel-chosen loopback port; sets tallyd_pid and tallyd_port.
# Fails if tallyd exits (a bad value exits 2 at once) or does not listen within 10 s.
start_tallyd() {
    local name=$1 envfile=$2 log=$tmp/$1.log i rc=0
    shift 2
    : >"$log"
    (
        unset "${!TALLY_@}"
        set -a
        # shellcheck source=/dev/null
        . "$envfile"
        set +a
        export TALLY_TOKEN=$token
        exec "$tallyd" --listen 127.0.0.1:0 "$@"
    ) 2>"$log" &
    tallyd_pid=$!
    pids+=("$tallyd_pid")
    tallyd_port=
    for ((i = 0; i < 200; i++)); do
        tallyd_port=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n1)
        [[ -n $tallyd_port ]] && return 0
        if ! kill -0 "$tallyd_pid" 2>/dev/null; then
            wait "$tallyd_pid" || rc=$?
            problem "tallyd with $name's values exited with status $rc: $(head -n3 "$log")"
        fi
        sleep 0.05
    done
    problem "tallyd with $name's values did not start listening: $(head -n3 "$log")"
}

# stop_tallyd: SIGTERM must drain and exit 0.
stop_tallyd() {
    local rc=0
    kill -TERM "$tallyd_pid"
    wait "$tallyd_pid" || rc=$?
    [[ $rc -eq 0 ]] || problem "tallyd exited with status $rc on SIGTERM"
}

# smoke_env NAME ENVFILE: tallyd accepts every value in ENVFILE and serves with them against
# a closed Redis port (alive, not ready), its --healthcheck agrees, SIGTERM exits 0.
smoke_env() {
    local name=$1 envfile=$2 closed
    closed=$(free_port)
    start_tallyd "$name" "$envfile" --redis "redis://127.0.0.1:$closed/0"
    expect_code 200 "http://127.0.0.1:$tallyd_port/healthz"
    expect_code 503 "http://127.0.0.1:$tallyd_port/readyz"
    "$tallyd" --healthcheck --listen "127.0.0.1:$tallyd_port" ||
        problem "tallyd --healthcheck failed against a running tallyd"
    stop_tallyd
    if "$tallyd" --healthcheck --listen "127.0.0.1:$tallyd_port" 2>/dev/null; then
        problem "tallyd --healthcheck succeeded with no tallyd running"
    fi
}

# ---- systemd ----

check_systemd() {
    local unit=$deploy/tallyd.service dir=$tmp/systemd out score nofile maxconn rc want
    need systemd-analyze systemd
    grep -qx 'ExecStart=/usr/local/bin/tallyd' "$unit" ||
        problem "ExecStart is not /usr/local/bin/tallyd (cmake --install's default)"
    grep -qE '^Type=(exec|simple)$' "$unit" || problem "Type must be exec or simple"
    grep -qx 'EnvironmentFile=-/etc/default/tallyd' "$unit" ||
        problem "EnvironmentFile=-/etc/default/tallyd is missing"
    grep -qx 'Restart=on-failure' "$unit" || problem "Restart=on-failure is missing"
    grep -qE '^RestartPreventExitStatus=(.* )?2( .*)?$' "$unit" ||
        problem "RestartPreventExitStatus must include 2 (tallyd's configuration errors)"
    grep -qx 'DynamicUser=yes' "$unit" || problem "DynamicUser=yes is missing"
    grep -qE '^After=.*network-online\.target' "$unit" || problem "After=network-online.target is missing"
    grep -qE '^Wants=.*network-online\.target' "$unit" || problem "Wants=network-online.target is missing"
    # The whole hardening set, explicitly (DynamicUser=yes implies a few of these, so the
    # exposure score alone would not notice their removal).
    for want in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
        PrivateDevices=yes PrivateUsers=yes ProtectKernelTunables=yes ProtectKernelModules=yes \
        ProtectKernelLogs=yes ProtectControlGroups=yes ProtectClock=yes ProtectHostname=yes \
        ProtectProc=invisible ProcSubset=pid RestrictNamespaces=yes RestrictRealtime=yes \
        RestrictSUIDSGID=yes LockPersonality=yes MemoryDenyWriteExecute=yes \
        SystemCallArchitectures=native SystemCallFilter=@system-service CapabilityBoundingSet= \
        AmbientCapabilities= UMask=0077 RemoveIPC=yes DevicePolicy=closed; do
        grep -qx "$want" "$unit" || problem "$want is missing"
    done
    if ! grep -qE '^RestrictAddressFamilies=' "$unit" ||
        grep -E '^RestrictAddressFamilies=' "$unit" | grep -qvE '^RestrictAddressFamilies=(AF_(INET|INET6|UNIX)( |$))+$'; then
        problem "RestrictAddressFamilies= must allow only AF_INET, AF_INET6 and AF_UNIX"
    fi
    nofile=$(sed -n 's/^LimitNOFILE=\([0-9]*\)$/\1/p' "$unit")
    maxconn=$(sed -n 's/^#\{0,1\}TALLY_MAX_CONNECTIONS=\([0-9]*\)$/\1/p' "$deploy/tallyd.env")
    [[ -n $nofile && $nofile -ge $((${maxconn:-10000} + 1024)) ]] ||
        problem "LimitNOFILE (${nofile:-unset}) must exceed --max-connections (${maxconn:-10000}) by 1024"

    # systemd-analyze needs the ExecStart binary to exist: point a copy at the built tallyd.
    mkdir -p "$dir"
    sed "s|^ExecStart=/usr/local/bin/tallyd|ExecStart=$tallyd|" "$unit" >"$dir/tallyd.service"
    # Bad values are only warnings with exit 0: any output on stderr is a failure.
    if ! systemd-analyze verify --man=no "$dir/tallyd.service" 2>"$dir/verify.err" ||
        [[ -s $dir/verify.err ]]; then
        cat "$dir/verify.err" >&2
        problem "systemd-analyze verify complained"
    fi
    # --threshold is on the 0-100 scale: 20 is the displayed 2.0.
    out=$(systemd-analyze security --offline=true --threshold=20 "$dir/tallyd.service" 2>&1) && rc=0 || rc=$?
    score=$(sed -n 's/.*Overall exposure level for tallyd\.service: \([0-9.]*\).*/\1/p' <<<"$out")
    echo "  systemd-analyze security: exposure ${score:-?} (at most 2.0 allowed)"
    [[ $rc -eq 0 ]] || problem "systemd-analyze security --threshold=20 exited $rc (exposure ${score:-?} > 2.0)"
}

# ---- env file ----

check_env() {
    local envfile=$deploy/tallyd.env line
    # Plain VARIABLE=value lines only: the same in systemd's EnvironmentFile and a shell.
    while IFS= read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        [[ $line =~ ^TALLY_[A-Z_]+=[^[:space:]\"\'\\\$\`]*$ ]] ||
            problem "not a plain TALLY_NAME=value line: $line"
    done <"$envfile"
    grep -oE '^#?TALLY_[A-Z_]+=' "$envfile" | tr -d '#=' | sort -u >"$tmp/env.names"
    comm -23 "$tmp/env.names" "$tmp/flags" | while read -r line; do
        problem "$line is not a tallyd variable (see tallyd --help)"
    done
    comm -13 "$tmp/env.names" "$tmp/flags" | while read -r line; do
        problem "$line is missing (every tallyd variable is documented there)"
    done
    ! grep -qE '^TALLY_HEALTHCHECK=' "$envfile" || problem "TALLY_HEALTHCHECK must not be set"
    ! grep -qE '^TALLY_LOAD_FUNCTIONS=' "$envfile" || problem "TALLY_LOAD_FUNCTIONS must not be set"
    grep -qE '^TALLY_LISTEN=127\.0\.0\.1:' "$envfile" || problem "TALLY_LISTEN should be on loopback"
    grep -qE '^TALLY_TRUST_PROXY=.*127\.0\.0\.1' "$envfile" || problem "TALLY_TRUST_PROXY should list 127.0.0.1"
    grep -qE '^TALLY_TOKEN=' "$envfile" || problem "TALLY_TOKEN is missing"
    grep -q 'openssl rand -hex 24' "$envfile" || problem "no note on generating the token"

    # The token placeholder must not be usable: tallyd refuses to start with it (exit 2 at
    # once; 124 would mean it started).
    local rc=0
    (
        unset "${!TALLY_@}"
        set -a
        # shellcheck source=/dev/null
        . "$envfile"
        set +a
        exec timeout 3 "$tallyd" --listen 127.0.0.1:0 --redis redis://127.0.0.1:1/0
    ) >/dev/null 2>"$tmp/placeholder.err" </dev/null || rc=$?
    if [[ $rc -ne 2 ]] || ! grep -q TALLY_TOKEN "$tmp/placeholder.err"; then
        problem "tallyd should refuse the token placeholder with exit 2 (got $rc)"
    fi

    smoke_env tallyd.env "$envfile"
}

# ---- Redis config, with tallyd through its ACL ----

check_redis() {
    local conf=$deploy/redis.conf envfile=$deploy/tallyd.env dir=$tmp/redis url port pid i
    local user pass prefix t a line acl cmd known
    need redis-server redis-server
    need redis-cli redis-tools
    for line in 'bind 127.0.0.1' 'protected-mode yes' 'appendonly yes' 'appendfsync always' \
        'maxmemory-policy noeviction'; do
        grep -qE "^${line}( |$)" "$conf" || problem "redis.conf: '$line' is missing"
    done
    grep -q 'everysec' "$conf" || problem "redis.conf: no note on what everysec would lose"
    url=$(sed -n 's/^TALLY_REDIS=//p' "$envfile")
    [[ $url =~ ^redis://([^:@/]+):([^@/]+)@[^/]+(/[0-9]+)?$ ]] ||
        problem "tallyd.env: TALLY_REDIS should be redis://USER:PASSWORD@HOST:PORT/DB"
    user=${BASH_REMATCH[1]} pass=${BASH_REMATCH[2]}
    prefix=$(sed -n 's/^TALLY_PREFIX=//p' "$envfile")
    grep -qE "^user $user on .*~${prefix}\\*( |$)" "$conf" ||
        problem "redis.conf: no user $user limited to ~${prefix}*"

    mkdir -p "$dir"
    port=$(free_port)
    # An extra all-powerful user only for this check, to read the ACL log.
    redis-server "$conf" --port "$port" --dir "$dir" --daemonize no --logfile "$dir/redis.log" \
        --save '' --user checker on '>check' '~*' '&*' '+@all' </dev/null >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    r() { redis-cli -p "$port" --user "$user" --pass "$pass" --no-auth-warning "$@" 2>&1; }
    for ((i = 0; i < 200; i++)); do
        [[ $(r PING) == PONG ]] && break
        kill -0 "$pid" 2>/dev/null || problem "redis-server refused redis.conf: $(tail -n3 "$dir/redis.log")"
        sleep 0.05
    done
    [[ $(r PING) == PONG ]] || problem "user $user cannot PING redis.conf's Redis"
    [[ $(redis-cli -p "$port" PING 2>&1) != PONG ]] || problem "the default user needs no password"
    [[ $(r FLUSHALL) == *NOPERM* ]] || problem "user $user may FLUSHALL"
    [[ $(r CONFIG GET dir) == *NOPERM* ]] || problem "user $user may CONFIG"
    [[ $(r SET other:key 1) == *NOPERM* ]] || problem "user $user may write outside ${prefix}*"
    # Scripts of its own, loading functions, other databases, listing keys: none of it.
    [[ $(r EVAL 'return 1' 0) == *NOPERM* ]] || problem "user $user may EVAL"
    [[ $(r SCRIPT LOAD 'return 1') == *NOPERM* ]] || problem "user $user may SCRIPT LOAD"
    [[ $(r FUNCTION LOAD "#!lua name=x
redis.register_function('x', function() return 1 end)") == *NOPERM* ]] ||
        problem "user $user may FUNCTION LOAD"
    [[ $(r FUNCTION FLUSH) == *NOPERM* ]] || problem "user $user may FUNCTION FLUSH"
    [[ $(r SELECT 1) == *NOPERM* ]] || problem "user $user may SELECT another database"
    [[ $(r KEYS '*') == *NOPERM* ]] || problem "user $user may KEYS"
    admin() { redis-cli -p "$port" --user checker --pass check --no-auth-warning "$@"; }
    [[ $(admin CONFIG GET appendfsync | tail -n1) == always ]] || problem "appendfsync is not always"
    [[ $(admin CONFIG GET maxmemory-policy | tail -n1) == noeviction ]] || problem "maxmemory-policy is not noeviction"
    admin ACL LOG RESET >/dev/null

    # Every Redis command named in the sources (C argument vectors, Lua redis.call) is
    # granted to the user: the ACL list in redis.conf keeps up with the code.
    acl=" $(grep -E "^user $user " "$conf") "
    known=$(admin COMMAND LIST)
    while read -r cmd; do
        grep -qix "$cmd" <<<"$known" || continue # an error word or a subcommand, not a command
        # READONLY: an error reply the writer recognises (src/writer.c), never sent. SELECT:
        # sent only for a database other than 0, which this user is kept out of (below).
        [[ $cmd != readonly && $cmd != select ]] || continue
        [[ $acl == *" +$cmd "* || $acl == *" +$cmd|"* ]] ||
            problem "redis.conf: user $user lacks +$cmd, which src/ sends"
    done < <({
        grep -ohE "redis\.p?call\('[A-Za-z]+'|\{'[A-Z]+'" "$root"/src/scripts/*.lua | grep -oE "[A-Za-z]+'$" | tr -d "'"
        # Not src/functions.c: --load-functions runs as an admin, never as this user.
        grep -ohE '"[A-Z][A-Z_]+"' $(ls "$root"/src/*.c | grep -v '/functions\.c$') | tr -d '"'
    } | tr '[:upper:]' '[:lower:]' | sort -u)
    for cmd in eval evalsha script function select keys flushall flushdb config; do
        [[ $acl != *" +$cmd "* && $acl != *" +$cmd|"* && $acl != *" +@"* ]] ||
            problem "redis.conf: user $user may $cmd (or a whole category)"
    done

    # The functions, loaded as the admin step of the deploy; the user itself may not.
    if "$tallyd" --load-functions --redis "redis://$user:$pass@127.0.0.1:$port/0" >/dev/null 2>&1; then
        problem "user $user could load the functions"
    fi
    admin ACL LOG RESET >/dev/null
    "$tallyd" --load-functions --redis "redis://checker:check@127.0.0.1:$port/0" >/dev/null ||
        problem "tallyd --load-functions as an admin failed"

    # tallyd with the env file's values and its Redis user and password, on this Redis.
    start_tallyd redis "$envfile" --redis "redis://$user:$pass@127.0.0.1:$port/0"
    t=http://127.0.0.1:$tallyd_port
    for ((i = 0; i < 200; i++)); do
        [[ $(http_code "$t/readyz") == 200 ]] && break
        sleep 0.05
    done
    expect_code 200 "$t/readyz"
    a=deploy%2Fcheck
    expect_code 200 "$t/v1/events" -A 'Mozilla/5.0 check-deploy' -d '{"type":"view","article":"deploy/check"}'
    expect_code 200 "$t/v1/events" -A 'Mozilla/5.0 check-deploy' \
        -d '{"type":"share","article":"deploy/check","network":"twitter"}'
    expect_code 200 "$t/v1/events" -H "Authorization: Bearer $token" -d '{"type":"comment","article":"deploy/check"}'
    [[ $(curl -s --max-time 10 "$t/v1/stats/$a") == *'"views":1,'*'"shares":1,'*'"comments":1'* ]] ||
        problem "GET /v1/stats did not show the events: $(curl -s "$t/v1/stats/$a")"
    expect_code 200 "$t/v1/top?metric=views&period=day"
    expect_code 200 "$t/v1/top?metric=views&period=month"
    expect_code 200 "$t/v1/totals"
    expect_code 200 "$t/v1/series/$a"
    expect_code 200 "$t/v1/badge/$a.svg"
    expect_code 204 "$t/v1/articles/$a" -X DELETE -H "Authorization: Bearer $token"
    stop_tallyd
    # Nothing tallyd sent (directly or from its Lua scripts) was refused by the ACL.
    if [[ -n $(admin ACL LOG) ]]; then
        admin ACL LOG | paste -sd' ' >&2
        problem "Redis's ACL refused tallyd something (ACL LOG above)"
    fi
}

# ---- Dockerfile ----

# owner FILE: the Debian package that ships FILE (dpkg knows /lib or /usr/lib, by usrmerge).
owner() {
    local p alt
    for p in "$1" "$(readlink -f "$1")"; do
        for alt in "$p" "${p#/usr}" "/usr$p"; do
            dpkg -S "$alt" 2>/dev/null | head -n1 | cut -d: -f1 | grep . && return 0
        done
    done
    return 1
}

check_dockerfile() {
    local df=$deploy/Dockerfile flat=$tmp/Dockerfile.flat stage=0 builder='' runtime_pkgs=''
    local line img copies=() lib pkg build=$tmp/docker workdir=/ words src dest
    need cmake cmake
    need dpkg dpkg
    # One instruction a line: comments dropped, continuations joined.
    sed -e '/^[[:space:]]*#/d' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' >"$flat"
    while IFS= read -r line; do
        case $line in
        FROM\ *)
            stage=$((stage + 1))
            img=$(awk '{print $2}' <<<"$line")
            if ((stage == 1)); then
                [[ $line =~ [[:space:]][Aa][Ss][[:space:]]+([A-Za-z0-9_-]+)$ ]] ||
                    problem "the first FROM needs AS <name>: $line"
                builder=${BASH_REMATCH[1]:-}
            fi
            [[ $img == "$builder" ]] && continue
            [[ $img == *:* || $img == *@sha256:* ]] || problem "image without a tag (means :latest): $img"
            [[ $img != *:latest && $img != *:latest@* ]] || problem "image tagged :latest: $img"
            ;;
        WORKDIR\ *)
            ((stage == 1)) && workdir=${line#WORKDIR }
            ;;
        COPY\ *)
            # Builder-stage COPYs from the context, as "SRC... DEST" (DEST relative to WORKDIR).
            if ((stage == 1)) && [[ $line != *--from=* ]]; then
                copies+=("${line#COPY }")
            fi
            ;;
        esac
        if [[ $line == RUN* && $line == *apt-get\ install* ]]; then
            local seg
            while IFS= read -r seg; do
                [[ $seg == *apt-get\ install* ]] || continue
                [[ $seg == *--no-install-recommends* ]] ||
                    problem "apt-get install without --no-install-recommends: $seg"
                if ((stage >= 2)); then
                    runtime_pkgs+=" ${seg#*apt-get install}"
                fi
            done < <(sed 's/&&/\n/g; s/;/\n/g' <<<"$line")
            [[ $line == *'rm -rf /var/lib/apt/lists'* ]] || problem "RUN with apt-get install keeps the apt lists"
        fi
    done <"$flat"
    ((stage >= 2)) || problem "not a multi-stage build (one FROM)"
    # Rules for the last stage: the image that runs.
    awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$flat" >"$tmp/final"
    grep -qE '^USER [0-9]+(:[0-9]+)?$' "$tmp/final" || problem "the runtime stage needs a numeric USER uid[:gid]"
    ! grep -qE '^USER 0(:|$)' "$tmp/final" || problem "USER 0 is root"
    grep -qE '^HEALTHCHECK .*CMD .*--healthcheck' "$tmp/final" || problem "HEALTHCHECK with tallyd --healthcheck is missing"
    grep -qE '^ENTRYPOINT \[ *"[^"]+"( *, *"[^"]*")* *\]$' "$tmp/final" || problem "ENTRYPOINT must be exec form [\"...\"]"
    grep -qE '^EXPOSE 8080$' "$tmp/final" || problem "EXPOSE 8080 is missing"
    grep -qE '^ENV TALLY_LISTEN=0\.0\.0\.0:8080$' "$tmp/final" || problem "ENV TALLY_LISTEN=0.0.0.0:8080 is missing"
    grep -q -- '-DCMAKE_BUILD_TYPE=Release' "$flat" ||
        problem "the builder must configure with -DCMAKE_BUILD_TYPE=Release"
    grep -q -- '-DBUILD_TESTING=OFF' "$flat" ||
        problem "the builder must configure with -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF"
    ((${#copies[@]})) || problem "the builder stage copies no sources"

    # What the builder stage copies must be enough to build tallyd (and what the
    # .dockerignore lets through): copy exactly that, as Docker would, and build it.
    mkdir -p "$build/ctx"
    for line in "${copies[@]}"; do
        read -ra words <<<"$line"
        dest=${words[-1]}
        [[ $dest == /* ]] || dest=$workdir/$dest
        for src in "${words[@]:0:${#words[@]}-1}"; do
            [[ -e $root/$src ]] || problem "COPY $src: no such file in the repository"
            if [[ -f $deploy/Dockerfile.dockerignore ]]; then
                grep -qxE "!${src%/}/?" "$deploy/Dockerfile.dockerignore" ||
                    problem "Dockerfile.dockerignore does not let $src through"
            fi
            if [[ -d $root/$src ]]; then
                mkdir -p "$build/ctx/$dest"
                cp -r "$root/$src/." "$build/ctx/$dest/"
            elif [[ $dest == */ || ${#words[@]} -gt 2 ]]; then
                mkdir -p "$build/ctx/$dest"
                cp "$root/$src" "$build/ctx/$dest/"
            else
                mkdir -p "$(dirname "$build/ctx/$dest")"
                cp "$root/$src" "$build/ctx/$dest"
            fi
        done
    done
    mkdir -p "$build/ctx/$workdir"
    if ! { cmake -S "$build/ctx/$workdir" -B "$build/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF &&
        cmake --build "$build/build" --target tallyd -j"$(nproc)"; } >"$build/log" 2>&1; then
        grep -E -m8 "rror|No rule|No such" "$build/log" >&2 || tail -n 8 "$build/log" >&2
        problem "tallyd does not build from the sources the builder stage copies"
    fi
    # Every shared library of that Release binary must come from a runtime-stage package.
    while read -r lib; do
        pkg=$(owner "$lib") || problem "no Debian package owns $lib"
        [[ $pkg == libc6 ]] && continue
        [[ " $runtime_pkgs " == *" $pkg "* ]] ||
            problem "the runtime stage does not install $pkg (for $lib)"
    done < <(ldd "$build/build/tallyd" | awk '$3 ~ /^\// {print $3}')
}

# ---- docker-compose ----

check_compose() {
    local file=$deploy/docker-compose.yml out=$tmp/compose.yaml err=$tmp/compose.err
    need docker-compose docker-compose
    need node nodejs
    if ! TALLY_TOKEN=$token docker-compose -f "$file" config -q 2>"$err"; then
        cat "$err" >&2
        problem "docker-compose config -q rejected $file"
    fi
    TALLY_TOKEN=$token docker-compose -f "$file" config >"$out" 2>/dev/null
    if (unset TALLY_TOKEN && docker-compose -f "$file" config -q) >/dev/null 2>"$err"; then
        problem "compose accepted a missing TALLY_TOKEN (use \${TALLY_TOKEN:?...})"
    fi
    grep -q TALLY_TOKEN "$err" || problem "the missing-TALLY_TOKEN error does not name it"
    [[ -d $tools/node_modules/js-yaml ]] || problem "run 'npm ci' in tests/tools/deploy first"
    node "$tools/check-compose.js" "$tmp/compose.env" <"$out" || problem "compose rules"
    smoke_env compose "$tmp/compose.env"
}

# ---- Kubernetes ----

check_kubernetes() {
    local files=()
    need yamllint yamllint
    need node nodejs
    mapfile -t files < <(find "$deploy/kubernetes" -name '*.yaml' -o -name '*.yml' | sort)
    ((${#files[@]})) || problem "no manifests in $deploy/kubernetes"
    yamllint --strict -c "$deploy/.yamllint" "${files[@]}" "$deploy/docker-compose.yml" >&2 ||
        problem "yamllint"
    [[ -d $tools/node_modules/kubernetes-models ]] ||
        problem "run 'npm ci' in tests/tools/deploy first (kubernetes-models, js-yaml)"
    node "$tools/check-kubernetes.js" --flags "$(paste -sd, "$tmp/flags")" \
        --env-out "$tmp/kubernetes.env" "${files[@]}" || problem "Kubernetes manifests"
    smoke_env kubernetes "$tmp/kubernetes.env"
}

# ---- nginx ----

check_nginx() {
    local dir=$tmp/nginx conf=$deploy/nginx/tally.conf http https t pid i body
    need nginx nginx-light
    need openssl openssl
    mkdir -p "$dir/tmp" && chmod 0755 "$tmp" "$dir"
    if ! grep -q 'ssl_certificate /etc/ssl/tally/fullchain.pem;' "$conf" ||
        ! grep -q 'ssl_certificate_key /etc/ssl/tally/privkey.pem;' "$conf"; then
        problem "tally.conf should use the placeholders /etc/ssl/tally/{fullchain,privkey}.pem"
    fi
    # shellcheck disable=SC2016 # nginx's variable, literally
    grep -qF 'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;' "$conf" ||
        problem "X-Forwarded-For \$proxy_add_x_forwarded_for is missing"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" >/dev/null 2>&1
    sed -e "s|/etc/ssl/tally/|$dir/|g" -e "s|/var/cache/nginx/tally|$dir/cache|g" "$conf" >"$dir/tally.conf"
    wrapper() { # the minimal nginx.conf around an included tally.conf
        cat <<EOF
pid $dir/nginx.pid;
error_log $dir/error.log notice;
events {}
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $1;
}
EOF
    }
    wrapper "$dir/tally.conf" >"$dir/nginx.conf"
    if ! nginx -t -q -p "$dir" -c "$dir/nginx.conf" 2>"$dir/t.err"; then
        cat "$dir/t.err" "$dir/error.log" >&2 2>/dev/null || true
        problem "nginx -t rejected tally.conf"
    fi

    # The same config, live: on free loopback ports (no IPv6 needed), to a running tallyd.
    start_tallyd nginx "$deploy/tallyd.env" --redis "redis://127.0.0.1:$(free_port)/0"
    http=$(free_port)
    https=$(free_port)
    sed -e '/listen \[::\]/d' -e "s/listen 80;/listen 127.0.0.1:$http;/" \
        -e "s/listen 443 /listen 127.0.0.1:$https /" \
        -e "s/server 127\.0\.0\.1:8080 /server 127.0.0.1:$tallyd_port /" \
        "$dir/tally.conf" >"$dir/live.conf"
    if ! grep -q "127.0.0.1:$https " "$dir/live.conf" ||
        ! grep -q "127.0.0.1:$tallyd_port " "$dir/live.conf"; then
        problem "cannot rewrite the listen/upstream lines for the live test"
    fi
    wrapper "$dir/live.conf" >"$dir/live-nginx.conf"
    nginx -p "$dir" -c "$dir/live-nginx.conf" -g 'daemon off;' 2>>"$dir/error.log" &
    pid=$!
    pids+=("$pid")
    t=https://stats.example.com:$https
    local c=(--resolve "stats.example.com:$https:127.0.0.1" --resolve "stats.example.com:$http:127.0.0.1" -k)
    for ((i = 0; i < 200; i++)); do
        [[ $(http_code "$t/healthz" "${c[@]}") == 200 ]] && break
        kill -0 "$pid" 2>/dev/null || problem "nginx did not start: $(tail -n3 "$dir/error.log")"
        sleep 0.05
    done
    expect_code 200 "$t/healthz" "${c[@]}"
    [[ $(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "${c[@]}" "http://stats.example.com:$http/v1/stats/a") == \
        "301 https://stats.example.com/v1/stats/a" ]] || problem "plain HTTP does not redirect to https"
    expect_code 200 "$t/tally.js" "${c[@]}"
    [[ -n $(find "$dir/cache" -type f 2>/dev/null) ]] || problem "nginx did not cache /tally.js"
    expect_code 200 "$t/metrics" "${c[@]}"
    expect_code 200 "$t/dashboard" "${c[@]}"
    body=$(head -c 66000 /dev/zero | tr '\0' 'x')
    expect_code 413 "$t/v1/events" "${c[@]}" --data-binary "$body"
    # ... but a large batch within tallyd's 64 KiB reaches tallyd (which refuses the junk).
    expect_code 400 "$t/v1/events" "${c[@]}" --data-binary "${body:0:60000}"
    # An import of up to 8 MiB reaches tallyd (here 2 MiB, which refuses the junk as its first
    # line), and its location waits above the two minutes an import may take.
    head -c 2097152 /dev/zero | tr '\0' 'x' >"$dir/import.ndjson"
    expect_code 400 "$t/v1/import" "${c[@]}" -H "Authorization: Bearer $token" \
        -H 'Idempotency-Key: check-deploy' -H 'Content-Type: application/x-ndjson' --data-binary "@$dir/import.ndjson"
    expect_code 413 "$t/v1/stats/a" "${c[@]}" --data-binary "${body:0:2000}"
    sed -n '/location = \/v1\/import {/,/}/p' "$conf" | grep -Eq 'proxy_read_timeout (1[2-9][0-9]|[2-9][0-9][0-9])s;' ||
        problem "the /v1/import location does not wait at least two minutes for tallyd"
    # /v1/live has a location of its own that does not buffer; HEAD is answered without
    # Redis, with the stream's head.
    sed -n '/location = \/v1\/live {/,/}/p' "$conf" | grep -q 'proxy_buffering off;' ||
        problem "the /v1/live location does not turn proxy_buffering off"
    [[ $(curl -s -o /dev/null -I -w '%{http_code} %{content_type}' "${c[@]}" "$t/v1/live?article=a") == \
        "200 text/event-stream" ]] || problem "HEAD /v1/live through nginx is not a 200 event stream"
    # A stream with no Redis behind it is tallyd's own 503, not nginx's 502.
    expect_code 503 "$t/v1/live?article=a" "${c[@]}"
    # A small event reaches tallyd, which has no Redis here: its own 503, not nginx's 502.
    expect_code 503 "$t/v1/events" "${c[@]}" -A 'Mozilla/5.0 check-deploy' -d '{"type":"view","article":"a"}'
    stop_tallyd
}

# ---- run them all ----

passed=0
failed=0
run_check() {
    local name=$1 rc
    shift
    set +e
    (
        set -e
        trap stop_started EXIT
        "$@"
    ) 2>"$tmp/check-$name.err"
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/     /' "$tmp/check-$name.err"
        failed=$((failed + 1))
    fi
}

run_check systemd check_systemd
run_check env check_env
run_check redis check_redis
run_check dockerfile check_dockerfile
run_check compose check_compose
run_check kubernetes check_kubernetes
run_check nginx check_nginx
echo "$passed passed, $failed failed"
((failed == 0))
