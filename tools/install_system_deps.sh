#!/bin/sh
# Install the system libraries Qt needs to run offscreen (and fonts for its text).
# Idempotent: installs nothing when everything is present.
set -eu
PKGS="libegl1 libgl1 libglib2.0-0 libfontconfig1 libfreetype6 libxkbcommon0 libdbus-1-3 fonts-dejavu-core"
if ! command -v dpkg >/dev/null 2>&1; then
    echo "sysdeps: not a Debian-like system; make sure these (or equivalents) are installed: $PKGS" >&2
    exit 0
fi
missing=""
for p in $PKGS; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "sysdeps: installing$missing" >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "sysdeps: need root to run: apt-get install -y$missing" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
