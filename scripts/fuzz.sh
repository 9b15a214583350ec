#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time and fails if any finds
# a crash.
#
#   scripts/fuzz.sh                              # each target for 30 s
#   LOGBOOK_FUZZ_SECONDS=600 scripts/fuzz.sh     # a longer session
#   LOGBOOK_FUZZ_TARGETS=verify_chain scripts/fuzz.sh
#
# cargo-fuzz needs nightly features; on the stable toolchain `RUSTC_BOOTSTRAP=1`
# unlocks them, for the fuzz builds only. The corpus grows in fuzz/corpus/TARGET
# (not committed); fuzz/seeds/TARGET, if present, is read as well. A crash
# leaves its input in fuzz/artifacts/TARGET/ and is printed here in hex, since
# CI keeps no files. Prints one line per target with the runs it executed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${LOGBOOK_FUZZ_SECONDS:-30}"
targets="${LOGBOOK_FUZZ_TARGETS:-decode_record verify_chain decode_wal resolve_path}"

# Inputs larger than any record or chain the targets build gain nothing and
# slow every run; 20 s is ample for one input even under AddressSanitizer.
max_len=8192
timeout_s=20

if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: LOGBOOK_FUZZ_SECONDS must be a positive integer, got '$seconds'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1

# One build for all targets, so that build time is not taken from fuzzing time.
echo "fuzz: building targets"
cargo fuzz build

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

n_passed=0
n_failed=0
for target in $targets; do
    log="$log_dir/$target.log"
    corpus=("fuzz/corpus/$target")
    mkdir -p "${corpus[0]}"
    if [[ -d "fuzz/seeds/$target" ]]; then
        corpus+=("fuzz/seeds/$target")
    fi

    status=0
    cargo fuzz run "$target" "${corpus[@]}" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout="$timeout_s" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?

    # libFuzzer's final stats; `#N DONE` and `Done N runs` say the same when
    # the run ends on time, and only the stats line survives a crash.
    n_runs="$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1 || true)"
    if [[ -z "$n_runs" ]]; then
        n_runs="$(grep -oE '^#[0-9]+[[:space:]]+DONE' "$log" | grep -oE '[0-9]+' | tail -n 1 || true)"
    fi
    elapsed="$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+' | tail -n 1 || true)"
    rate=""
    if [[ -n "$n_runs" && -n "$elapsed" && "$elapsed" -gt 0 ]]; then
        rate=" ($((n_runs / elapsed)) runs/s)"
    fi
    corpus_size="$(find "${corpus[0]}" -type f | wc -l | tr -d ' ')"

    if [[ "$status" -eq 0 ]]; then
        echo "fuzz: $target: ok, ${n_runs:-unknown number of} runs in ${elapsed:-$seconds} s$rate, corpus $corpus_size inputs"
        n_passed=$((n_passed + 1))
        continue
    fi

    n_failed=$((n_failed + 1))
    echo "fuzz: $target: FAILED (exit $status) after ${n_runs:-an unknown number of} runs" >&2
    echo "----- $target: from the libFuzzer log -----" >&2
    # The panic message (up to its backtrace) and the sanitizer's or libFuzzer's
    # error and summary lines; the full log has hundreds of stack frames.
    awk '
        /panicked at/ { in_panic = 1 }
        in_panic && /^stack backtrace:|^==[0-9]+==/ { in_panic = 0 }
        in_panic { print; next }
        /ERROR: |^SUMMARY: |Test unit written to / { print }
    ' "$log" | head -n 80 >&2 || true
    artifact="$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)"
    if [[ -n "$artifact" && -f "$artifact" ]]; then
        echo "----- $target: crashing input $artifact ($(wc -c <"$artifact" | tr -d ' ') bytes), hex -----" >&2
        head -c 4096 "$artifact" | od -An -v -tx1 | tr -d ' \n' >&2
        echo >&2
        echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target $artifact" >&2
    fi
done

echo "fuzz: $n_passed passed, $n_failed failed"
if [[ "$n_failed" -gt 0 ]]; then
    echo "fuzz: a fuzz target found a crash; see above" >&2
    exit 1
fi
