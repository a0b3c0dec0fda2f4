#!/usr/bin/env bash
# lint-openapi.sh OPENAPI TALLYD -- lint the OpenAPI document with redocly (any error or
# warning fails), then check it against a running tallyd (check-openapi.mjs).
# Needs `npm ci` (or `npm install`) in this directory first; works offline after that.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 <openapi.yaml> <tallyd>" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec=$(realpath "$1")
tallyd=$(realpath "$2")
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1

cd "$here"
if [ ! -x node_modules/.bin/redocly ]; then
    echo "lint-openapi: node modules missing: run 'npm ci' in $here" >&2
    exit 2
fi
[ -x "$tallyd" ] || { echo "lint-openapi: $tallyd is not executable" >&2; exit 2; }

# 1. redocly lint: exit 0 is not enough, warnings (and problems hidden by an ignore file) fail too.
status=0
report=$(npx --no-install redocly lint --config redocly.yaml --format json "$spec" 2>/dev/null) ||
    status=$?
totals=$(node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
        try {
            const t = JSON.parse(s).totals;
            console.log([t.errors, t.warnings, t.ignored].join(" "));
        } catch {
            console.log("? ? ?");
        }
    });' <<<"$report")
read -r errors warnings ignored <<<"$totals"
if [ "$status" -ne 0 ] || [ "$errors" != 0 ] || [ "$warnings" != 0 ] || [ "$ignored" != 0 ]; then
    npx --no-install redocly lint --config redocly.yaml "$spec" 2>&1 | grep -v '[║╔╚]' || true
    echo "lint-openapi: redocly lint: exit $status, $errors error(s), $warnings warning(s), $ignored ignored" >&2
    exit 1
fi
echo "lint-openapi: redocly lint: no errors, no warnings"

# 2. The document against the daemon.
exec node check-openapi.mjs "$spec" "$tallyd"
