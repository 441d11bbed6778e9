#!/usr/bin/env bash
# Heap allocations and copied bytes per request on the proxy's hot path, counted by valgrind's DHAT (not timed, so
# the numbers are exact and machine-independent):
#
#   bench/harness/allocs.sh [VARIANT]     # VARIANT of attache.sh (default bare); needs valgrind, nginx, oha
#
# The proxy runs under `valgrind --tool=dhat` twice per protocol (heap mode, then copy mode), serving N1 and N2
# requests; (count(N2) - count(N1)) / (N2 - N1) removes start-up and shutdown. The backend is nginx serving a file of
# BODY_BYTES (default 64); requests are plain GETs over 4 keep-alive connections. Comparing BODY_BYTES=64 with
# BODY_BYTES=65536 shows whether body bytes are copied on the way through (they should not be).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=bench/harness
variant=${1:-bare}
n1=${N1:-500} n2=${N2:-2500}
# DHAT counts what goes through malloc: the sidecar's own allocator (mimalloc) does not, so this builds the binary
# with the system allocator, in a target directory of its own.
bin=${ATTACHE_PROXY:-$PWD/target/system-alloc/release/attache-proxy}
[ -x "$bin" ] || cargo build --release --locked -p attache-proxy --no-default-features --target-dir target/system-alloc
work=$(mktemp -d /tmp/attache-allocs.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work"/{cb,pt,ft,ut,st,www}
head -c "${BODY_BYTES:-64}" /dev/zero | tr '\0' x >"$work/www/body"
cat > "$work/backend.conf" <<CONF
worker_processes 1; pid $work/backend.pid; error_log $work/backend.err warn; daemon on;
events { worker_connections 1024; }
http {
  access_log off; default_type text/plain; keepalive_requests 10000000;
  client_body_temp_path $work/cb; proxy_temp_path $work/pt; fastcgi_temp_path $work/ft;
  uwsgi_temp_path $work/ut; scgi_temp_path $work/st;
  server { listen 127.0.0.1:18480; root $work/www; location / { try_files /body =404; } }
  server { listen 127.0.0.1:18481 http2; root $work/www; location / { try_files /body =404; } }
}
CONF
nginx -c "$work/backend.conf" -p "$work"

# Prints "<blocks> <bytes>" (heap mode) or "<copies> <bytes>" (copy mode) for one run serving $2 requests.
count() {
  local mode=$1 n=$2 proto=$3 port=18490 h2=18491 out="$work/dhat.$1.$2.$3"
  mkdir -p "$work/p"
  printf '#!/bin/sh\nexec valgrind --tool=dhat --mode=%s --dhat-out-file=%s.json %s "$@"\n' "$mode" "$out" "$bin" \
    >"$work/proxy.sh"
  chmod +x "$work/proxy.sh"
  ATTACHE_PROXY="$work/proxy.sh" $here/attache.sh "$variant" $port $h2 127.0.0.1:18480 127.0.0.1:18481 "$work/p" 2>"$out.log" &
  local pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  if [ "$proto" = h1 ]; then
    oha --no-tui -n "$n" -c 4 "http://127.0.0.1:$port/" >/dev/null
  else
    oha --no-tui --http2 -n "$n" -c 1 -p 4 "http://127.0.0.1:$h2/" >/dev/null
  fi
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  # "Total:     123 bytes in 4 blocks" (heap) / "Total:     123 bytes in 4 blocks" is copy mode's wording too.
  sed -n 's/.*Total: *\([0-9,]*\) bytes in \([0-9,]*\) blocks.*/\2 \1/p' "$out.log" | tr -d , | head -1
}

per() { python3 -c "print(f'{($2 - $1) / ($n2 - $n1):.1f}')"; }

echo "## $variant, ${BODY_BYTES:-64}-byte response body: per request, over $((n2 - n1)) requests (valgrind DHAT)"
echo
echo "| proto | heap allocations | heap bytes allocated | copies (memcpy/memmove) | bytes copied |"
echo "|---|---|---|---|---|"
for proto in h1 h2c; do
  read -r hb1 hB1 <<<"$(count heap $n1 $proto)"
  read -r hb2 hB2 <<<"$(count heap $n2 $proto)"
  read -r cb1 cB1 <<<"$(count copy $n1 $proto)"
  read -r cb2 cB2 <<<"$(count copy $n2 $proto)"
  echo "| $proto | $(per $hb1 $hb2) | $(per $hB1 $hB2) | $(per $cb1 $cb2) | $(per $cB1 $cB2) |"
done
