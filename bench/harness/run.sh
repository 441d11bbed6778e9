#!/usr/bin/env bash
# The data-path benchmark: direct vs attache-proxy vs HAProxy vs nginx on loopback, HTTP/1.1 and h2c, with
# bench/harness/proxybench.py (throughput, open-loop latency at a fixed rate, CPU per request, RSS).
#
#   bench/harness/run.sh setup          # Debian packages (wrk, h2load, haproxy, nginx, valgrind) and oha
#   bench/harness/run.sh [RUNS]         # RUNS (default 3) rounds of every variant, then the median table
#
# Each round measures direct, haproxy and nginx beside attaché's `bare` route, then direct beside each other
# variant (realistic, traced, mtls, tcp; `VARIANTS="bare tcp"` picks some) so every ratio compares numbers from the same invocation. Layout: split (core 0
# = load generator + backend, core 1 = the proxy alone); see proxybench.py for the definitions.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=bench/harness
if [ "${1:-}" = setup ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nghttp2-client haproxy nginx libnginx-mod-stream hey curl util-linux valgrind
  command -v oha >/dev/null || cargo install oha --locked
  exit 0
fi
runs=${1:-3}
variants=${VARIANTS:-bare realistic traced mtls tcp}
cargo build --release --locked -p attache-proxy
export ATTACHE_PROXY=$PWD/target/release/attache-proxy
out=$here/results/$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$out"
for round in $(seq 1 "$runs"); do
  for variant in $variants; do
    targets=direct sweep=""
    # The bare round also spreads the fixed rate over 10, 100 and 1,000 connections (single-core p99 flatness).
    [ "$variant" = bare ] && targets=direct,haproxy,nginx sweep="--conn-sweep ${SWEEP:-10,100,1000}"
    python3 $here/proxybench.py --targets "$targets" --out "$out/$variant" \
      --proxy-name "attache-$variant" --proxy-port 18190 --proxy-h2-port 18191 \
      --proxy-cmd "$here/attache.sh $variant {port} {h2_port} {upstream} {upstream_h2} {workdir}" \
      $sweep ${BENCH_ARGS:-}
  done
done
for variant in $variants; do
  echo "## attache-$variant ($runs runs: median [min-max])"
  python3 $here/proxybench.py summarize "$out/$variant"/*.json
done | tee "$out/summary.md"
