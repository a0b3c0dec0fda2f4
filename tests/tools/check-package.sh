#!/usr/bin/env bash
# check-package.sh SOURCE WORK TALLYD MANPAGE -- the manual page, `cmake --install` and the
# Debian package:
#   man      MANPAGE (tallyd(8) as the build writes it) passes `mandoc -T lint` with no message
#            at all, and names exactly the flags that TALLYD's --help lists
#   install  a build in WORK for the prefix /usr, with Debian's hardening flags, installs
#            exactly the expected files (DESTDIR); the installed unit starts the installed
#            binary and reads /etc/default/tallyd
#   deb      `cpack -G DEB` there builds a package holding the same files; Depends lists the
#            libraries (dpkg-shlibdeps) and adduser; the postinst creates the tally user;
#            lintian finds no error (its warnings are printed)
# Needs cmake, gcc, mandoc, lintian, dpkg-dev and file (scripts/deps.sh --test).
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 SOURCE WORK TALLYD MANPAGE" >&2
    exit 2
fi
src=$(realpath "$1")
work=$2
tallyd=$(realpath "$3")
manpage=$(realpath "$4")
failures=0
problem() {
    echo "check-package: $*" >&2
    failures=$((failures + 1))
}
for tool in mandoc lintian dpkg-deb dpkg-shlibdeps file cpack; do
    command -v "$tool" >/dev/null || { echo "check-package: $tool is missing (scripts/deps.sh --test)" >&2; exit 2; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-package.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

# ---- man: lint, and the same flags as --help ----
if ! mandoc -T lint -W all "$manpage" >"$tmp/lint" 2>&1 || [[ -s $tmp/lint ]]; then
    cat "$tmp/lint" >&2
    problem "mandoc -T lint complains about tallyd(8)"
fi
"$tallyd" --help | sed -n 's/^  \(-[a-zA-Z], \)\{0,1\}\(--[a-z-]*\).*/\2/p' | sort >"$tmp/help-flags"
# The tag line of each .TP entry: "\fB\-\-flag\fR \fIVALUE\fR" or "\fB\-h\fR, \fB\-\-help\fR".
awk 'tp { print } { tp = ($0 == ".TP") }' "$manpage" | sed 's/\\-/-/g' |
    sed -n 's/^\\fB\(-[a-zA-Z]\\fR, \\fB\)\{0,1\}\(--[a-z-]*\)\\fR.*/\2/p' | sort >"$tmp/man-flags"
if ! diff -u "$tmp/help-flags" "$tmp/man-flags" >"$tmp/flags.diff" || [[ ! -s $tmp/help-flags ]]; then
    cat "$tmp/flags.diff" >&2
    problem "tallyd(8) and --help list different flags"
fi
echo "check-package: tallyd(8) lints clean and lists the $(wc -l <"$tmp/help-flags") flags of --help"

# ---- install: a release build for the prefix /usr ----
# Debian's hardening flags, as a package build would use them (CMake reads CFLAGS and LDFLAGS,
# not CPPFLAGS: _FORTIFY_SOURCE goes into CFLAGS).
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
export CFLAGS LDFLAGS
cmake -S "$src" -B "$work" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBUILD_TESTING=OFF >"$tmp/configure.log" || { cat "$tmp/configure.log" >&2; exit 1; }
cmake --build "$work" -j2 >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
DESTDIR=$tmp/root cmake --install "$work" >/dev/null
want=$(printf '%s\n' \
    /lib/systemd/system/tallyd.service \
    /usr/bin/tallyd \
    /usr/share/doc/tally/changelog.Debian.gz \
    /usr/share/doc/tally/copyright \
    /usr/share/doc/tally/examples/tallyd.env \
    /usr/share/man/man8/tallyd.8.gz)
got=$(cd "$tmp/root" && find . -type f | sed 's/^\.//' | sort)
[[ $got == "$want" ]] || problem "cmake --install put $(tr '\n' ' ' <<<"$got")instead of $(tr '\n' ' ' <<<"$want")"
unit=$tmp/root/lib/systemd/system/tallyd.service
grep -qx 'ExecStart=/usr/bin/tallyd' "$unit" || problem "the installed unit does not start /usr/bin/tallyd"
grep -qx 'EnvironmentFile=-/etc/default/tallyd' "$unit" || problem "the installed unit does not read /etc/default/tallyd"
grep -qx 'User=tally' "$unit" || problem "the installed unit does not run as tally"
diff <(grep -v '^ExecStart=' "$src/deploy/tallyd.service") <(grep -v '^ExecStart=' "$unit") >/dev/null ||
    problem "the installed unit differs from deploy/tallyd.service in more than ExecStart"
cmp -s <(gzip -dc "$tmp/root/usr/share/man/man8/tallyd.8.gz") "$manpage" ||
    problem "the installed tallyd(8) is not the one the build wrote"
"$tmp/root/usr/bin/tallyd" --version >/dev/null || problem "the installed tallyd does not run"
echo "check-package: cmake --install puts $(wc -l <<<"$want") files where Debian expects them"

# ---- deb: cpack, contents, control, lintian ----
rm -f "$work"/*.deb
(cd "$work" && cpack -G DEB >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log" >&2; exit 1; }
debs=("$work"/tally_*.deb)
[[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || { problem "cpack made no single tally_*.deb"; exit 1; }
deb=${debs[0]}
got=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's/^\.//' | sort)
[[ $got == "$want" ]] || problem "the package holds $(tr '\n' ' ' <<<"$got")instead of $(tr '\n' ' ' <<<"$want")"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in adduser libc6 libevent-2.1-7 libhiredis0.14 libcjson1; do
    grep -qE "(^|, )$lib( |,|$)" <<<"$depends" || problem "Depends ($depends) lacks $lib"
done
grep -qE '(^|, )libasan' <<<"$depends" && problem "Depends ($depends) has a sanitizer's library"
mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
[[ -x $tmp/control/postinst ]] || problem "the package has no executable postinst"
grep -qE '^ *adduser --system .* tally$' "$tmp/control/postinst" || problem "the postinst does not create the tally user"
sh -n "$tmp/control/postinst" || problem "the postinst is not valid sh"
lintian --fail-on error --info --pedantic "$deb" >"$tmp/lintian" 2>&1 && rc=0 || rc=$?
grep -v -e '^running with root privileges' -e '^N:' "$tmp/lintian" | sed 's/^/  lintian: /' || true
if [[ $rc -ne 0 ]] || grep -q '^E:' "$tmp/lintian"; then
    problem "lintian found errors in $(basename "$deb") (exit $rc)"
fi
echo "check-package: $(basename "$deb"): Depends: $depends; lintian: $(grep -c '^E:' "$tmp/lintian" || true) errors, $(grep -c '^W:' "$tmp/lintian" || true) warnings"

if [[ $failures -gt 0 ]]; then
    echo "check-package: $failures problem(s)" >&2
    exit 1
fi
echo "check-package: OK"
