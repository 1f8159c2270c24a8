#!/usr/bin/env bash
# Whole-process start-up of the release binary:
#   * `facegate models`: process start, argument parsing, the manifests (no model is loaded);
#   * `facegate analyze --json IMAGE` on one bundled photo: all three models parsed from the
#     embedded NNEF, optimised and warmed up, then one image analysed;
#   * `facegate analyze --json MISSING`: the same start-up without the image (one error line).
# Uses hyperfine when installed (`apt-get install -y hyperfine`), else a loop timed with
# `date +%s%N`; prints medians. Usage: benches/startup_cli.sh [RUNS] (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FACEGATE_BIN:-target/release/facegate}
RUNS=${1:-15}
IMG=assets/samples/obama.jpg
MISSING=/nonexistent/facegate-startup.jpg
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
mkdir -p benches/results
OUT=benches/results/startup_cli.json

if command -v hyperfine >/dev/null; then
    # The missing-file run exits 3 (partial); -i accepts that.
    hyperfine -N -i --warmup 2 --runs "$RUNS" --style basic --export-json "$OUT" \
        -n models "$BIN models" \
        -n analyze_missing_file "$BIN analyze --json $MISSING" \
        -n analyze_one_image "$BIN analyze --json $IMG" >&2
    python3 - "$OUT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print("| command | median | min | max | runs |\n|---|---|---|---|---|")
for x in r:
    print(f"| {x['command']} | {1e3*x['median']:.1f} ms | {1e3*x['min']:.1f} ms | {1e3*x['max']:.1f} ms | {len(x['times'])} |")
EOF
else
    median_ms() {  # command... ; prints the median wall time in ms over $RUNS runs, interleaving is up to the caller
        local t=()
        for _ in $(seq "$RUNS"); do
            local s e
            s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N)
            t+=($(( (e - s) / 1000 )))
        done
        printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'
    }
    echo "| command | median |"; echo "|---|---|"
    echo "| models | $(median_ms "$BIN" models) ms |"
    echo "| analyze_missing_file | $(median_ms "$BIN" analyze --json "$MISSING") ms |"
    echo "| analyze_one_image | $(median_ms "$BIN" analyze --json "$IMG") ms |"
fi
