#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder (libFuzzer through cargo-fuzz, nightly).
#
#   scripts/fuzz.sh [TARGET...]       every target (fuzz/fuzz_targets/) or the named ones
#   FUZZ_SECONDS=600 (default)        how long each target runs
#   FUZZ_JOBS=$(nproc) (default)      targets run at once
#
# Each target starts from fuzz/corpus/TARGET (seeded from the protocol fixtures) and
# ends by minimizing it back (cargo fuzz cmin, edges only), so the committed corpus stays small and
# `make test` replays it on stable (fuzz-bodies/tests/replay.rs). An input that crashes a
# target is copied to fuzz/regressions/TARGET/, where the replay keeps it forever, and
# the script exits non-zero. A table of executions and findings is printed at the end
# (RELIABILITY.md records the runs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-600}"
jobs="${FUZZ_JOBS:-$(nproc)}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

# libFuzzer's instrumentation needs nightly; the rest of the project does not.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export CC="${CC:-ccache cc}" CXX="${CXX:-ccache c++}"

# One build for all targets, before the clock starts.
(cd fuzz && cargo +nightly fuzz build)

logs="fuzz/logs"
mkdir -p "$logs"
run_one() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local rc=0
  (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/") >"$logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$t.rc"
}

running=0
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${seconds}s"
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

failed=0
printf '\n%-14s %8s %14s %10s %8s %8s\n' target seconds executions exec/s corpus crashes
for t in "${targets[@]}"; do
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  crashes=0
  for a in fuzz/artifacts/"$t"/*; do
    [ -f "$a" ] || continue
    mkdir -p "fuzz/regressions/$t"
    cp "$a" "fuzz/regressions/$t/"
    crashes=$((crashes + 1))
  done
  if [ "$(cat "$logs/$t.rc")" != 0 ] || [ "$crashes" -gt 0 ]; then failed=1; fi
  # Minimize what the run added back to a set that covers the same edges (hit counts
  # left out), so the committed corpus stays a few hundred small files.
  (cd fuzz && cargo +nightly fuzz cmin "$t" "corpus/$t" -- -use_counters=0 -set_cover_merge=1 \
      >"logs/$t.cmin.log" 2>&1) || true
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  printf '%-14s %8s %14s %10s %8s %8s\n' "$t" "$seconds" "$execs" "$rate" "$corpus" "$crashes"
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: a target crashed; its input is in fuzz/regressions/ (see $logs/)" >&2
  exit 1
fi
