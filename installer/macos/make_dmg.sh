#!/usr/bin/env bash
# The macOS disk image: T-MAC Chat.app next to an /Applications link, compressed (UDZO).
#   installer/macos/make_dmg.sh "dist/T-MAC Chat.app" release/tmac-chat-<version>-macos-<arch>.dmg
# Called by `python build.py bundle` on macOS (installer/bundle.py) after PyInstaller has built
# the .app (installer/tmac_chat.spec: Info.plist, the .icns icon, this machine's architecture).
#
# Signing and notarization run only when configured (installer/README.md):
#   MACOS_SIGN_IDENTITY   "Developer ID Application: Name (TEAMID)" in the keychain: PyInstaller has
#                         signed every binary with it (hardened runtime, entitlements.plist); here the
#                         .app is signed again as a whole and then the .dmg
#   APPLE_API_KEY_PATH, APPLE_API_KEY_ID, APPLE_API_ISSUER
#                         an App Store Connect team API key (.p8): the .dmg is notarized and the
#                         ticket stapled to it
# Without MACOS_SIGN_IDENTITY the app keeps PyInstaller's ad-hoc signature: it runs on the build
# machine and in CI, and Gatekeeper asks users to confirm it (right click, Open).
set -euo pipefail
app=${1:?usage: make_dmg.sh APP.app OUT.dmg}
out=${2:?usage: make_dmg.sh APP.app OUT.dmg}
here=$(cd "$(dirname "$0")" && pwd)
volume=$(basename "$app" .app)
[ -d "$app/Contents/MacOS" ] || { echo "make_dmg: $app is not an app bundle" >&2; exit 1; }
# one architecture per app (no universal2: numpy and sentencepiece ship thin wheels)
lipo -archs "$app/Contents/MacOS/tmac-chat"

identity=${MACOS_SIGN_IDENTITY:-}
if [ -n "$identity" ]; then
    echo "make_dmg: signing $app as $identity"
    codesign --force --timestamp --options runtime --entitlements "$here/entitlements.plist" \
        --sign "$identity" "$app"
    codesign --verify --deep --strict --verbose=2 "$app"
else
    echo "make_dmg: MACOS_SIGN_IDENTITY is not set: the app keeps its ad-hoc signature, no notarization"
    codesign --verify --deep --strict "$app"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
ditto "$app" "$stage/$(basename "$app")"  # ditto keeps symlinks, extended attributes and signatures
ln -s /Applications "$stage/Applications"
mkdir -p "$(dirname "$out")"
rm -f "$out"
hdiutil create -volname "$volume" -srcfolder "$stage" -fs HFS+ -format UDZO -imagekey zlib-level=9 -ov "$out"

if [ -n "$identity" ]; then
    codesign --force --timestamp --sign "$identity" "$out"
    if [ -n "${APPLE_API_KEY_PATH:-}" ] && [ -n "${APPLE_API_KEY_ID:-}" ] && [ -n "${APPLE_API_ISSUER:-}" ]; then
        echo "make_dmg: notarizing $out"
        xcrun notarytool submit "$out" --key "$APPLE_API_KEY_PATH" --key-id "$APPLE_API_KEY_ID" \
            --issuer "$APPLE_API_ISSUER" --wait --timeout 30m
        xcrun stapler staple "$out"
        xcrun stapler validate "$out"
        spctl --assess --type open --context context:primary-signature --verbose=2 "$out"
    else
        echo "make_dmg: APPLE_API_KEY_PATH/_ID/_ISSUER not set: signed but not notarized"
    fi
fi
hdiutil verify "$out"
echo "make_dmg: $out"
