#!/usr/bin/env bash
# Packs the whole comparison of scripts/bench-device.sh into one archive that runs on another
# x86-64 Linux machine with nothing installed there: no Rust toolchain, no redis-server or
# nats-server, no jq, no network. What goes in:
#
#   bin/gyre, bin/gyre-bench      this checkout's release build, debug info stripped
#   bin/redis-server, bin/nats-server, bin/jq
#                                 the peers and the summary's JSON tool as installed here, each
#                                 a small wrapper that runs the real program (libexec/) with the
#                                 shared libraries it was linked with here (lib/, all but glibc)
#   scripts/                      bench-device.sh and bench-lib.sh
#   run.sh                        runs bench-device.sh with the packed programs first on PATH
#   COMMIT                        the commit the binaries were built from
#
# On the other machine:
#
#   tar -xzf gyre-bench-pack.tar.gz -C /tmp
#   bash /tmp/gyre-bench-pack/run.sh --duration 5 --out /tmp/runs    # bench-device.sh options
#
# A peer that is not installed here is left out of the pack (bench-device.sh then skips it
# there, unless that machine has it). glibc is not packed: the machine needs glibc 2.34 or later
# (what Debian 12 or Ubuntu 22.04 have).
#
#   bash scripts/bench-pack.sh [--skip-build] [--out FILE]   # default target/gyre-bench-pack.tar.gz
set -euo pipefail

BUILD=1
ARCHIVE=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --skip-build) BUILD=0; shift ;;
        --out) ARCHIVE="${2:?--out needs a file}"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "bench-pack.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ARCHIVE="${ARCHIVE:-target/gyre-bench-pack.tar.gz}"
for tool in ldd strip tar; do
    command -v "$tool" >/dev/null || { echo "bench-pack.sh: $tool not found" >&2; exit 2; }
done
if [[ $BUILD == 1 ]]; then
    echo "== cargo build --release --bin gyre --bin gyre-bench" >&2
    cargo build --release --bin gyre --bin gyre-bench
fi

STAGE="$(mktemp -d /tmp/gyre-bench-pack.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
PACK="$STAGE/gyre-bench-pack"
mkdir -p "$PACK/bin" "$PACK/libexec" "$PACK/lib" "$PACK/scripts"

for b in gyre gyre-bench; do
    [[ -x target/release/$b ]] || { echo "bench-pack.sh: target/release/$b is missing (build it first)" >&2; exit 2; }
    strip --strip-debug -o "$PACK/bin/$b" "target/release/$b"
done

# glibc's own libraries stay out: they must match the machine's loader.
is_glibc() {
    case "$1" in
        linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*) return 0 ;;
        *) return 1 ;;
    esac
}

# pack_program NAME: the installed NAME as libexec/NAME behind a wrapper bin/NAME, with the
# libraries it needs in lib/.
pack_program() {
    local name="$1" path lib file
    path="$(command -v "$name" 2>/dev/null)" || { echo "== not packed: $name is not installed here" >&2; return 0; }
    # redis-server is a link to redis-check-rdb, which acts as the server when called by this name.
    cp -L "$path" "$PACK/libexec/$name"
    while read -r lib _ file _; do
        is_glibc "$lib" && continue
        [[ -n "$file" && -f "$file" ]] || continue
        cp -L -n "$file" "$PACK/lib/$lib"
    done < <(ldd "$path" 2>/dev/null | grep '=>' || true)
    # exec keeps the process id, so the load tool's --server-pid still measures the server.
    cat >"$PACK/bin/$name" <<EOF
#!/bin/sh
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "\$here/libexec/$name" "\$@"
EOF
    chmod +x "$PACK/bin/$name"
    echo "== packed $name ($path)" >&2
}
pack_program redis-server
pack_program nats-server
pack_program jq

cp scripts/bench-device.sh scripts/bench-lib.sh "$PACK/scripts/"
git rev-parse --short=12 HEAD >"$PACK/COMMIT" 2>/dev/null || echo unknown >"$PACK/COMMIT"
cat >"$PACK/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs scripts/bench-device.sh (its options, e.g. --duration 5 --out DIR) with the packed
# programs: this folder's bin/ first on PATH, its gyre and gyre-bench, no build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$here/bin:$PATH"
GYRE="$here/bin/gyre" BENCH="$here/bin/gyre-bench" GYRE_COMMIT="$(cat "$here/COMMIT")" \
    exec bash "$here/scripts/bench-device.sh" --skip-build "$@"
EOF
chmod +x "$PACK/run.sh"

mkdir -p "$(dirname "$ARCHIVE")"
tar -czf "$ARCHIVE" -C "$STAGE" gyre-bench-pack
echo "== $(du -h "$ARCHIVE" | cut -f1) $ARCHIVE (commit $(cat "$PACK/COMMIT"))" >&2
echo "$ARCHIVE"
