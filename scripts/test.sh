#!/usr/bin/env bash
# test.sh -- install what the tests need, build with AddressSanitizer and
# UndefinedBehaviorSanitizer, and run every test: unit, integration, browser and docs.
# Each test starts the services it needs (redis-server on free loopback ports, Chromium)
# and stops them again.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh" --test
if [ -f "$top/tests/tools/package.json" ]; then
    (cd "$top/tests/tools" && npm ci --no-audit --no-fund --loglevel=error)
fi
build="$top/build-test"
cmake -S "$top" -B "$build" -DTALLY_SANITIZE=ON -DTALLY_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 "$@"
