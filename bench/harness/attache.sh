#!/usr/bin/env bash
# Runs attache-proxy in the foreground as one benchmark variant, for bench/harness/proxybench.py's --proxy-cmd:
#
#   attache.sh VARIANT PORT H2_PORT UPSTREAM UPSTREAM_H2 WORKDIR
#
# VARIANT:
#   bare       one route, no retries (metrics, access log off, trace context: always on)
#   realistic  the route with retries on connect failure / gateway errors and their budget; metrics and trace
#              headers (always on) - the configuration a mesh runs by default
#   traced     realistic plus span export of every request (sampling 1.0) over OTLP/HTTP to the backend (which
#              answers 200 to the POSTs, as a collector would)
#   mtls       two sidecars: the client's outbound originates mTLS to the server's inbound (strict, with
#              authorization), which forwards to the backend
#   tcp        an opaque TCP listener straight to the backend (h1 only)
# The proxy binary is $ATTACHE_PROXY (default target/release/attache-proxy). Logs go to WORKDIR.
set -euo pipefail
variant=$1 port=$2 h2_port=$3 upstream=$4 upstream_h2=$5 work=$6
bin=${ATTACHE_PROXY:-target/release/attache-proxy}
export RUST_LOG=${RUST_LOG:-warn}

# h2c clients send authority 127.0.0.1:H2_PORT: the exact host:port routes to the h2c backend; any other port to h1.
services() {
  local target_h1=$1 target_h2=$2 extra=$3
  cat <<YAML
services:
  - name: h2
    hosts: ["127.0.0.1:$h2_port"]
    routes:
      - name: default
$extra        backends: [{ name: $target_h2 }]
  - name: h1
    hosts: ["127.0.0.1", "localhost"]
    routes:
      - name: default
$extra        backends: [{ name: $target_h1 }]
YAML
}

listeners() {
  cat <<YAML
listeners:
  - { name: outbound, address: "127.0.0.1:$port", direction: outbound }
  - { name: outbound-h2, address: "127.0.0.1:$h2_port", direction: outbound }
YAML
}

case $variant in
bare|realistic|traced)
  extra=""
  tracing=""
  if [ "$variant" != bare ]; then
    extra="        retry: { attempts: 2, on: [connect-failure, gateway-error] }
"
  fi
  if [ "$variant" = traced ]; then
    tracing="tracing:
  sampling: 1.0
  otlp: { endpoint: \"http://$upstream/v1/traces\" }
"
  fi
  cat > "$work/attache.yaml" <<YAML
admin: { address: "127.0.0.1:0" }
$(listeners)
$(services h1 h2 "$extra")
backends:
  - { name: h1, endpoints: ["$upstream"], protocol: http1 }
  - { name: h2, endpoints: ["$upstream_h2"], protocol: http2 }
$tracing
YAML
  exec "$bin" run --config "$work/attache.yaml"
  ;;
tcp)
  cat > "$work/attache.yaml" <<YAML
admin: { address: "127.0.0.1:0" }
listeners:
  - { name: tcp, address: "127.0.0.1:$port", direction: outbound, protocol: opaque, tcp_backend: h1 }
  - { name: tcp-h2, address: "127.0.0.1:$h2_port", direction: outbound, protocol: opaque, tcp_backend: h2 }
backends:
  - { name: h1, endpoints: ["$upstream"] }
  - { name: h2, endpoints: ["$upstream_h2"] }
YAML
  exec "$bin" run --config "$work/attache.yaml"
  ;;
mtls)
  td=bench.local
  "$bin" certs init --dir "$work/ca" --trust-domain $td >/dev/null
  "$bin" certs issue --ca-dir "$work/ca" --spiffe-id spiffe://$td/ns/bench/sa/client --out "$work/client" >/dev/null
  "$bin" certs issue --ca-dir "$work/ca" --spiffe-id spiffe://$td/ns/bench/sa/server --out "$work/server" >/dev/null
  in_h1=$((port + 1000)) in_h2=$((h2_port + 1000))
  tls() { echo "{ identity: \"spiffe://$td/ns/bench/sa/server\", cert: \"$work/client/cert.pem\", key: \"$work/client/key.pem\", trust_bundle: \"$work/client/bundle.pem\" }"; }
  cat > "$work/client.yaml" <<YAML
admin: { address: "127.0.0.1:0" }
$(listeners)
$(services h1 h2 "")
backends:
  - { name: h1, endpoints: ["127.0.0.1:$in_h1"], protocol: http1, tls: $(tls) }
  - { name: h2, endpoints: ["127.0.0.1:$in_h2"], protocol: http2, tls: $(tls) }
YAML
  server_tls="{ mode: strict, cert: \"$work/server/cert.pem\", key: \"$work/server/key.pem\", trust_bundle: \"$work/server/bundle.pem\" }"
  authz="{ allow: [\"spiffe://$td/ns/bench/sa/client\"] }"
  cat > "$work/server.yaml" <<YAML
admin: { address: "127.0.0.1:0" }
listeners:
  - { name: inbound, address: "127.0.0.1:$in_h1", direction: inbound, app: "$upstream", tls: $server_tls, authorization: $authz }
  - { name: inbound-h2, address: "127.0.0.1:$in_h2", direction: inbound, app: "$upstream_h2", tls: $server_tls, authorization: $authz }
YAML
  "$bin" run --config "$work/server.yaml" 2>"$work/server.log" &
  server=$!
  "$bin" run --config "$work/client.yaml" 2>"$work/client.log" &
  client=$!
  trap 'kill -TERM $client $server 2>/dev/null; wait' TERM INT
  wait
  ;;
*)
  echo "unknown variant $variant (bare, realistic, traced, mtls, tcp)" >&2
  exit 2
  ;;
esac
