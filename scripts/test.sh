#!/usr/bin/env bash
# Runs every test Logbook has, installing what the tests need first.
# CI runs exactly this (via .ci/run). Heavier soak sizes: see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "tools"
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# The sandbox tests (server/tests/sandbox, tests/tests/sandbox_runner.rs) run
# as root with bubblewrap and use, inside sandboxes, what a sandbox image has
# under /usr: python3 with pip, node with npm, curl, procps, util-linux.
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
# The storage-fault tests compile their LD_PRELOAD shim with `cc`.
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
[ -x /usr/bin/npm ] || missing+=(npm)
# Repository resources clone with git; their tests serve repositories with
# `git http-backend` (part of the git package).
if ! command -v git >/dev/null 2>&1 || [[ ! -x "$(git --exec-path)/git-http-backend" ]]; then
    missing+=(git)
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
# apt package installs in sandboxes resolve against the host's package lists.
if [ "${#missing[@]}" -gt 0 ] || ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    $SUDO apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "doc tests"
cargo test --workspace --doc --locked

step "fuzz (${LOGBOOK_FUZZ_SECONDS:-30} s per target)"
./scripts/fuzz.sh

step "official SDK conformance (anthropic==2.14.0)"
./scripts/sdk-tests.sh

step "tests"
cargo nextest run --workspace --locked --no-fail-fast
