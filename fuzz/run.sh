#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer's coverage instrumentation on stable Rust and run
# each for a bounded time. Usage: fuzz/run.sh [seconds-per-target] [target…]
# Exit non-zero when any target finds a crash (its input is kept under fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"; shift || true
targets=("$@"); [ "${#targets[@]}" -gt 0 ] || targets=(netconf result cni_args conflist proxy_api plugin_conf)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts and proc-macros (as cargo-fuzz does).
triple=$(rustc -vV | sed -n "s/^host: //p")
cargo build --release --quiet --target-dir target --target "$triple" --bins
bin="target/$triple/release"
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  seeds="seeds/$t"; [ -d "$seeds" ] || seeds=""
  log="artifacts/$t/last-run.log"
  if "$bin/$t" "corpus/$t" $seeds -max_total_time="$secs" -max_len=65536 \
       -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "fuzz: $t: ${runs:-?} executions in ${secs}s, no crash"
  else
    echo "fuzz: $t: CRASH — see fuzz/$log and fuzz/artifacts/$t/" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit $status
