#!/usr/bin/env bash
# Builds and runs the Logbook server. Installs what the server needs at run
# time if it is missing (bubblewrap, for the tool sandbox). Extra arguments go
# to `logbook serve` (see `logbook serve --help`; LOGBOOK_LISTEN, LOGBOOK_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bwrap >/dev/null 2>&1; then
    echo "serve.sh: installing bubblewrap (the tool sandbox)" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap
fi

cargo build --release -p logbook-server --bin logbook
exec ./target/release/logbook serve "$@"
