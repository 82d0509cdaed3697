#!/usr/bin/env bash
# Runs fuzz targets in fuzz/ for a bounded time each:
#   scripts/fuzz.sh [SECONDS per target, default 60] [TARGET...]   (no TARGET: every target)
#
# cargo-fuzz wants nightly; with `-s none` (no sanitizer) the only unstable bit is cargo-fuzz's
# own use of nightly flags, which RUSTC_BOOTSTRAP=1 allows on the stable toolchain.
# Each target starts from the committed seeds in fuzz/seeds/<target>/ (with the dictionary
# fuzz/dicts/<target>.dict when there is one); what libFuzzer learns goes to
# fuzz/corpus/<target>/ and crashes to fuzz/artifacts/<target>/ (both git-ignored).
# Prints the executions of every target at the end.
# FUZZ_DEV=1 builds the targets in the dev profile (much quicker to build, slower to run: the
# CI smoke run uses it).
# Exits non-zero when any target crashed (a panic or a failed property).
set -euo pipefail

secs="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

# Longest input per target: http_head gets room for header/chunk lines past the 4 KiB limits.
max_len() {
    case "$1" in
        http_head) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

profile=()
[ "${FUZZ_DEV:-0}" = 1 ] && profile=(--dev)

cargo fuzz build -s none "${profile[@]}"

targets=("$@")
[ "${#targets[@]}" -ne 0 ] || mapfile -t targets < <(cargo fuzz list)

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
    dict=()
    [ -f "fuzz/dicts/$target.dict" ] && dict=("-dict=fuzz/dicts/$target.dict")
    log="fuzz/artifacts/$target/last-run.log"
    echo "== $target: ${secs}s" >&2
    set +e
    cargo fuzz run -s none "${profile[@]}" "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$secs" -max_len="$(max_len "$target")" -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$log" | grep -E 'panicked|Test unit written|ERROR|^Done' >&2
    rc=${PIPESTATUS[0]}
    set -e
    runs="$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)"
    # A crash ends the run before the final stats: take the last progress line instead.
    [ -n "$runs" ] || runs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
    if [ "$rc" -ne 0 ]; then
        failed+=("$target")
        summary+=("$target: CRASH after $runs executions (rc $rc), see $log and fuzz/artifacts/$target/")
    else
        summary+=("$target: ok, $runs executions in ${secs}s")
    fi
done

printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
