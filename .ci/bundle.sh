#!/usr/bin/env bash
# CI: the Linux installers, built, installed and checked the way a user gets them.
#   1. python build.py bundle: the frozen app, the .deb and the portable tarball (release/)
#   2. dpkg -i the .deb, then the installed app's --self-test offscreen and under Xvfb (the
#      real xcb platform plugin, the one desktop users get), each with its JSON report
#   3. the static bundle checks on the installed tree (/opt/tmac-chat)
#   4. the portable tarball unpacked and self-tested offscreen
#   5. the Windows installer script compiled with makensis against a stub payload
# Called by .ci/run after the tests; it takes a few minutes (most of it PyInstaller).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # nsis: makensis; dpkg-dev: dpkg-deb; binutils: strip, nm, objdump for the bundle checks;
    # xvfb + xauth: xvfb-run; the libxcb-* and libxkbcommon-x11 libraries: Qt's xcb plugin
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq nsis dpkg-dev binutils desktop-file-utils xvfb xauth \
        libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 \
        libxcb-render-util0 libxcb-image0 libxcb-xkb1 libxkbcommon-x11-0 libx11-xcb1 libegl1 libgl1 \
        libfontconfig1 libdbus-1-3 >/dev/null
fi
python=.venv/bin/python
start=$(date +%s)
python build.py bundle
echo "bundle.sh: python build.py bundle took $(( $(date +%s) - start )) s"

deb=$(ls release/tmac-chat_*.deb)
$SUDO dpkg -i "$deb"
trap '$SUDO dpkg -r tmac-chat >/dev/null 2>&1 || true' EXIT
work=$(mktemp -d)
export TMAC_CACHE_DIR="$work/cache"  # the repacked model: written by the first run, reused by the others

self_test() {  # self_test NAME COMMAND...: runs the installed app's --self-test, prints its JSON
    local name=$1; shift
    local t0; t0=$(date +%s%N)
    if ! "$@" --self-test --timeout 240 --report "$work/$name.json" > "$work/$name.out" 2> "$work/$name.err"; then
        echo "bundle.sh: self-test $name FAILED" >&2
        cat "$work/$name.out" >&2; tail -n 40 "$work/$name.err" >&2
        exit 1
    fi
    echo "bundle.sh: self-test $name passed in $(( ($(date +%s%N) - t0) / 1000000 )) ms:"
    cat "$work/$name.json"
    cp "$work/$name.json" "release/self-test-linux-$name.json"  # uploaded by the release workflow
}

QT_QPA_PLATFORM=offscreen self_test offscreen /usr/bin/tmac-chat
# the real X11 path: no QT_QPA_PLATFORM, a virtual display, Qt picks xcb by itself
self_test xvfb env -u QT_QPA_PLATFORM xvfb-run -a -s "-screen 0 1280x800x24" /usr/bin/tmac-chat
grep -q '"qt_platform": "xcb"' "$work/xvfb.json" || { echo "bundle.sh: the Xvfb run did not use xcb" >&2; exit 1; }

"$python" installer/check_bundle.py /opt/tmac-chat --json "$work/check_bundle.json"

tar -xzf release/tmac-chat-*-linux-*.tar.gz -C "$work"
QT_QPA_PLATFORM=offscreen self_test portable "$(ls -d "$work"/tmac-chat-*-linux-*/)tmac-chat/tmac-chat"

installer/windows/check_nsis.sh "$python"
rm -rf "$work"
echo "bundle.sh: all bundle checks passed in $(( $(date +%s) - start )) s"
