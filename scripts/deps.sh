#!/usr/bin/env bash
# deps.sh -- install the Debian packages tally needs, only those that are missing.
#   scripts/deps.sh            what building and running need
#   scripts/deps.sh --test     also what the whole test suite needs
#   scripts/deps.sh --bench    also what bench/run.sh needs (wrk, nginx, webdis)
set -euo pipefail

run=(libevent-dev libhiredis-dev libcjson-dev redis-server redis-tools cmake gcc libc6-dev
     make pkg-config ca-certificates curl)
test=(libcmocka-dev python3 nodejs npm clang libclang-rt-14-dev chromium prometheus
      systemd nginx-light docker-compose yamllint openssl mandoc lintian dpkg-dev file)

bench=(wrk nginx-light webdis python3 nodejs npm)

want=("${run[@]}")
case "${1:-}" in
--test) want+=("${test[@]}") ;;
--bench) want+=("${bench[@]}") ;;
esac

missing=()
for p in "${want[@]}"; do
    # nodejs/npm may come from elsewhere than Debian (e.g. NodeSource): a working node is enough.
    case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    # Packages such as redis-server, nginx-light and prometheus would start system services of
    # their own on install; tally starts its own processes on free ports, so keep those off
    # with a policy-rc.d for the duration (unless the machine already has one).
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        own_policy=1
        trap '"${sudo[@]}" rm -f "$policy"' EXIT
    fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$own_policy" -eq 1 ]; then
        "${sudo[@]}" rm -f "$policy"
        trap - EXIT
    fi
fi
