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
# Repository resources clone with git; their tests serve repositories with
# `git http-backend` (part of the git package).
if ! command -v git >/dev/null 2>&1 || [[ ! -x "$(git --exec-path)/git-http-backend" ]]; then
    apt-get update && apt-get install -y git
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
