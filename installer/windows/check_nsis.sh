#!/usr/bin/env bash
# Compiles installer/windows/tmac_chat.nsi with makensis (Linux or Windows) for x64 and arm64
# against a stub payload, with warnings as errors (-WX): any script error fails. The stub is a
# folder shaped like the PyInstaller onedir (tmac-chat.exe, _internal/); the real payload is
# compiled by `python build.py bundle` on the Windows runners.
#   installer/windows/check_nsis.sh [PYTHON]      PYTHON (default .venv/bin/python) draws the icon
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-.venv/bin/python}
command -v makensis >/dev/null || { echo "check_nsis: makensis not found (apt-get install nsis)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/payload/_internal/assets"
printf 'MZ stub executable\n' > "$work/payload/tmac-chat.exe"
printf 'stub\n' > "$work/payload/_internal/assets/catalog.json"
"$python" installer/icons.py "$work/icons" >/dev/null
version=$("$python" installer/layout.py version)
for arch in x64 arm64; do
    out="$work/tmac-chat-$version-windows-$arch-setup.exe"
    makensis -V4 -WX -DARCH="$arch" -DVERSION="$version" -DPAYLOAD="$work/payload" \
        -DICON="$work/icons/tmac-chat.ico" -DOUTFILE="$out" installer/windows/tmac_chat.nsi > "$work/makensis.log" \
        || { cat "$work/makensis.log" >&2; exit 1; }
    [ "$(head -c 2 "$out")" = "MZ" ] || { echo "check_nsis: $out is not a Windows executable" >&2; exit 1; }
    for packed in '"tmac-chat.exe"' '"catalog.json"'; do  # the payload, subfolders included, went in
        grep -q "File: $packed" "$work/makensis.log" || { echo "check_nsis: $packed not packed" >&2; exit 1; }
    done
    echo "check_nsis: $arch installer compiled ($(wc -c < "$out") bytes)"
done
# a wrong ARCH must be refused by the script itself
if makensis -V1 -DARCH=x86 -DVERSION="$version" -DPAYLOAD="$work/payload" -DICON="$work/icons/tmac-chat.ico" \
        -DOUTFILE="$work/bad.exe" installer/windows/tmac_chat.nsi >/dev/null 2>&1; then
    echo "check_nsis: ARCH=x86 was accepted" >&2; exit 1
fi
echo "check_nsis: ok"
