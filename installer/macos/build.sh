#!/usr/bin/env bash
# Builds the macOS .app and .dmg for this Mac's architecture (arm64 on Apple Silicon, x86_64
# on Intel): one thin build per architecture, each on its own machine or runner.
#   installer/macos/build.sh [PYTHON]        PYTHON: a python3.11+ for this architecture (default python3)
# The extensions are compiled for this architecture only (ARCHFLAGS): a universal2 Python would
# otherwise compile the x86 tier files for the arm64 slice too, which fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-python3}
arch=$(uname -m)
if [ "$arch" = "x86_64" ] && [ "$(sysctl -in sysctl.proc_translated)" = "1" ]; then
    echo "build.sh: this shell runs under Rosetta; build the arm64 app natively instead" >&2
    exit 1
fi
export ARCHFLAGS="-arch $arch"
# the oldest macOS the bundled wheels allow: pip picks numpy's macosx_14_0 wheel on macOS 14+
export MACOSX_DEPLOYMENT_TARGET=${MACOSX_DEPLOYMENT_TARGET:-14.0}
"$python" build.py bundle
