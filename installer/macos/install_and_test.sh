#!/usr/bin/env bash
# Installs the .dmg the way a user does (mount, copy the app out, unmount), then runs the
# installed app's --self-test and prints its JSON report. Used by the release workflow.
#   installer/macos/install_and_test.sh release/tmac-chat-<version>-macos-<arch>.dmg [DEST_DIR]
set -euo pipefail
dmg=${1:?usage: install_and_test.sh DMG [DEST_DIR]}
dest=${2:-$HOME/Applications}
mount=$(mktemp -d)
hdiutil attach -nobrowse -readonly -mountpoint "$mount" "$dmg"
trap 'hdiutil detach "$mount" -quiet || true' EXIT
app=$(find "$mount" -maxdepth 1 -name "*.app" | head -n 1)
[ -n "$app" ] || { echo "install_and_test: no .app in $dmg" >&2; exit 1; }
mkdir -p "$dest"
rm -rf "${dest:?}/$(basename "$app")"
ditto "$app" "$dest/$(basename "$app")"
hdiutil detach "$mount" -quiet
trap - EXIT
installed="$dest/$(basename "$app")"
codesign --verify --deep --strict "$installed"
report=$(mktemp)
"$installed/Contents/MacOS/tmac-chat" --self-test --timeout 300 --report "$report"
cat "$report"
