#!/usr/bin/env bash
# test.sh -- install what the tests need, build with AddressSanitizer and
# UndefinedBehaviorSanitizer, and run every test: unit, integration, browser and docs; then
# run the threaded parts under ThreadSanitizer; then build the libFuzzer harnesses with clang
# and fuzz each target for a bounded time (TALLY_FUZZ_SECONDS, default 20: the whole run stays
# well under 15 minutes on two cores; fuzz longer by hand). Each test starts the services it
# needs (redis-server on free loopback ports, Chromium) and stops them again. Temporary files
# go to one scratch directory per run, removed at the end (TALLY_KEEP_TMP=1 keeps it and
# prints where).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)

# One scratch directory per run, the TMPDIR of everything below (ctest, the harnesses, redis,
# Chromium); removed on exit, passed or failed, unless TALLY_KEEP_TMP=1 (or TALLY_TEST_KEEP=1,
# which keeps the harnesses' own directories) asks to keep it. 0755: services that drop
# privileges (nginx's workers in docs.deploy) must reach their files below it.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/tally-test.XXXXXX")
chmod 0755 "$scratch"
cleanup() {
    if [ "${TALLY_KEEP_TMP:-}" = 1 ] || [ "${TALLY_TEST_KEEP:-}" = 1 ]; then
        echo "test.sh: scratch files kept in $scratch" >&2
    else
        rm -rf -- "$scratch" || echo "test.sh: could not remove all of $scratch" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export TMPDIR="$scratch"

"$top/scripts/deps.sh" --test
for dir in tests/tools tests/tools/deploy tests/browser; do
    if [ -f "$top/$dir/package.json" ]; then
        (cd "$top/$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    fi
done
# expect_tests DIR REGEX N: the filter REGEX selects exactly N tests in build DIR (a renamed or
# dropped test must not shrink a stage silently).
expect_tests() {
    local n
    n=$(ctest --test-dir "$1" -N -R "$2" | sed -n 's/^Total Tests: //p')
    if [ "$n" != "$3" ]; then
        echo "test.sh: '$2' selects ${n:-no} tests in $1, expected $3:" >&2
        ctest --test-dir "$1" -N -R "$2" >&2
        exit 1
    fi
}

build="$top/build-test"
cmake -S "$top" -B "$build" -DTALLY_SANITIZE=ON -DTALLY_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure --no-tests=error -j2 "$@"

# ThreadSanitizer over what runs on several threads at once: the shared rate limiter and write
# epochs, the per-thread metrics read by /metrics, ingest and reads on four worker threads, and
# a read on one worker waking and waiting for the journal folds of the others.
tsan="$top/build-tsan"
CC=clang cmake -S "$top" -B "$tsan" -DTALLY_TSAN=ON -DTALLY_TEST_THREADS=4 >/dev/null
cmake --build "$tsan" -j"$(nproc)" --target tallyd test_ratelimit test_cache
tsan_tests='^(unit\.(ratelimit|cache)|integration\.(ingest|stats|visitors|live|live_timing|journal)|docs\.metrics)$'
expect_tests "$tsan" "$tsan_tests" 9
TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
    ctest --test-dir "$tsan" --output-on-failure --no-tests=error -j2 -R "$tsan_tests"

# Fuzzing: clang with libFuzzer, every target for a bounded time.
fuzz="$top/build-fuzz"
CC=clang cmake -S "$top" -B "$fuzz" -DTALLY_FUZZ=ON \
    -DTALLY_FUZZ_SECONDS="${TALLY_FUZZ_SECONDS:-20}" >/dev/null
cmake --build "$fuzz" -j"$(nproc)" --target fuzz_events fuzz_query fuzz_config fuzz_time fuzz_http
expect_tests "$fuzz" '^fuzz\.' 10
ctest --test-dir "$fuzz" --output-on-failure --no-tests=error -j2 -R '^fuzz\.'
