#!/usr/bin/env bash
# update-bots.sh -- update the bot list: fetch crawler-user-agents from npm and regenerate
# src/bots_list.inc and tests/unit/data/bot-user-agents.txt.
#
# This is how to update the list:
#   scripts/update-bots.sh              the version pinned below
#   scripts/update-bots.sh 1.61.0       another version; then update the pin here and the
#                                       version in THIRD_PARTY_NOTICES
# Then review `git diff src/bots_list.inc` (broadened and excluded patterns are listed at its
# top), build and run the unit tests: tests/unit/test_bots.c checks every upstream example and a
# table of real browsers. A pattern that hits a browser goes into EXCLUDED in update-bots.py,
# with a reason. update-bots.py stops with an error, writing nothing, if the new list uses a
# regex construct it cannot translate or if its translation disagrees with upstream's examples.
#
# Only npm is used: `npm pack` downloads the published tarball into a temporary directory,
# which is removed afterwards.
set -euo pipefail

version=${1:-1.60.0}
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "crawler-user-agents@$version" >/dev/null)
tar -xzf "$tmp/crawler-user-agents-$version.tgz" -C "$tmp"
python3 "$top/scripts/update-bots.py" "$tmp/package/crawler-user-agents.json" "$version"
