#!/usr/bin/env bash
# Real-browser tests of tally.js, the demo pages and the dashboard.
#
#   tests/browser/run.sh path/to/tallyd [FILE.test.mjs...]
#
# Without files it runs the embed, demo, dashboard and page tests; ctest runs the reading and
# engaged-time tests (read.test.mjs) as a test of their own, so that neither passes its time limit.
# Needs node (>= 18.17, Debian 12's is enough), Debian's chromium (/usr/bin/chromium, or TALLY_CHROMIUM), redis-server, and
# the pinned playwright-core installed with `npm ci` in tests/browser (it never downloads a
# browser). The tests start and stop their own redis-server, tallyd instances and page servers on
# free loopback ports. Screenshots go to $TALLY_BROWSER_ARTIFACTS (default: a new temp dir).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 path/to/tallyd [FILE.test.mjs...]" >&2
    exit 2
fi

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
tallyd=$(realpath -- "$1" 2>/dev/null || true)
shift
files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
    files=(embed.test.mjs demo.test.mjs dashboard.test.mjs page.test.mjs)
fi
if [[ -z "$tallyd" || ! -x "$tallyd" ]]; then
    echo "browser tests: tallyd binary '$1' not found or not executable" >&2
    exit 2
fi

fail() {
    echo "browser tests: $*" >&2
    exit 1
}

command -v node >/dev/null || fail "node is not installed (apt-get install nodejs npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[[ "$node_major" -ge 18 ]] || fail "node >= 18 is needed, this is $(node --version)"
command -v redis-server >/dev/null || fail "redis-server is not installed (apt-get install redis-server)"
command -v redis-cli >/dev/null || fail "redis-cli is not installed (apt-get install redis-tools)"
chromium=${TALLY_CHROMIUM:-/usr/bin/chromium}
[[ -x "$chromium" ]] || fail "$chromium is missing (apt-get install chromium)"
if [[ ! -f "$here/node_modules/playwright-core/package.json" ]]; then
    fail "tests/browser/node_modules is missing: run 'cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci' first"
fi

artifacts=${TALLY_BROWSER_ARTIFACTS:-}
if [[ -z "$artifacts" ]]; then
    artifacts=$(mktemp -d "${TMPDIR:-/tmp}/tally-browser.XXXXXX")
fi
mkdir -p -- "$artifacts"

export TALLYD="$tallyd"
export TALLY_BROWSER_ARTIFACTS="$artifacts"
export TALLY_CHROMIUM="$chromium"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PLAYWRIGHT_BROWSERS_PATH=0

cd -- "$here"
echo "browser tests: screenshots in $artifacts"
echo "browser tests: $(node --version), $("$chromium" --version 2>/dev/null | tail -n 1), playwright-core $(node -p 'require("playwright-core/package.json").version')"
# One test file at a time: each starts its own Chromium, redis-server and tallyd instances, and the
# timing checks (live counter, layout shift) should not compete for the CPU with another file.
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
