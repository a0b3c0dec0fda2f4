#!/usr/bin/env bash
# deps.sh -- install the Debian packages tally needs, only those that are missing.
#   scripts/deps.sh            what building and running need
#   scripts/deps.sh --test     also what the whole test suite needs
set -euo pipefail

run=(libevent-dev libhiredis-dev libcjson-dev redis-server redis-tools cmake gcc make
     pkg-config ca-certificates curl)
test=(libcmocka-dev python3 nodejs npm clang libclang-rt-14-dev chromium prometheus
      systemd nginx-light docker-compose yamllint openssl)

want=("${run[@]}")
if [ "${1:-}" = "--test" ]; then
    want+=("${test[@]}")
fi

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
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
