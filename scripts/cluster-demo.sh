#!/usr/bin/env bash
# make cluster-demo: three bookbroker nodes behind HAProxy, on loopback.
#
#   scripts/cluster-demo.sh           start sellersim, three engine nodes (127.0.0.2-4),
#                                     HAProxy in front (127.0.0.1:8080); print the
#                                     balancer's URL and curls; stop everything on Ctrl-C
#   scripts/cluster-demo.sh --drill   the same, then run the failover drill and print
#                                     every command it runs with its output
#
# Environment: CLUSTER_LISTEN (balancer, default 127.0.0.1:8080), CLUSTER_NODES (three or
# more host:port, default "127.0.0.2:8080 127.0.0.3:8080 127.0.0.4:8080"), CLUSTER_CORES
# (cores per node, default 1), CLUSTER_SPARE (where the drill moves node 1, default
# 127.0.0.5:8080), BIN (the binaries, default target/release).
# Linux answers on every 127.x.y.z address of the loopback interface, so the nodes
# need no setup. Everything lives in a temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

drill=false
[ "${1:-}" = "--drill" ] && drill=true
LISTEN=${CLUSTER_LISTEN:-127.0.0.1:8080}
read -r -a NODES <<<"${CLUSTER_NODES:-127.0.0.2:8080 127.0.0.3:8080 127.0.0.4:8080}"
CORES=${CLUSTER_CORES:-1}
SPARE=${CLUSTER_SPARE:-127.0.0.5:8080}
BIN=${BIN:-target/release}
KEY=demo-key-123
N=${#NODES[@]}

for b in bookbroker sellersim; do
  [ -x "$BIN/$b" ] || { echo "cluster-demo: $BIN/$b is missing; run make cluster-demo" >&2; exit 1; }
done
# Debian installs haproxy in /usr/sbin, which is not on a normal user's PATH.
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || { echo "cluster-demo: haproxy is missing; run scripts/ensure-deps.sh" >&2; exit 1; }

work=$(mktemp -d /tmp/bookbroker-cluster.XXXXXX)
pids=()
node_pid=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "cluster-demo: stopping (pids ${pids[*]:-none})"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The partition of an Idempotency-Key: CRC-32 (zlib's, as HAProxy's crc32 converter)
# mod N. gzip's trailer holds exactly that CRC, little-endian.
partition() {
  local crc
  crc=$(printf %s "$1" | gzip -c | tail -c8 | head -c4 | od -An -tu4 | tr -d ' ')
  echo $((crc % N))
}

wait_http() { # URL, seconds
  local until=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$until" ] || return 1
    sleep 0.1
  done
}

stat_of() { # backend/server -> status from HAProxy's runtime API
  echo "show stat" | socat stdio "unix-connect:$work/haproxy.sock" |
    awk -F, -v px="${1%/*}" -v sv="${1#*/}" '$1 == px && $2 == sv { print $18 }'
}

wait_up() { # node index, seconds
  local until=$((SECONDS + $2))
  until [ "$(stat_of "quotes/node$1")" = UP ] && [ "$(stat_of "p$1/node$1")" = UP ]; do
    [ "$SECONDS" -lt "$until" ] || return 1
    sleep 0.2
  done
}

start_node() { # index, address
  "$BIN/bookbroker" serve --config "$work/node$1.toml" --listen "$2" --cores "$CORES" \
    --data-dir "$work/data$1" >>"$work/node$1.log" 2>&1 &
  pids+=($!)
  node_pid[$1]=$!
  wait_http "http://$2/readyz" 20 || { echo "node $1 did not start on $2:"; tail -20 "$work/node$1.log"; exit 1; }
}

"$BIN/sellersim" --scenario sellersim/scenarios/demo.toml --emit-config "$work/sim.toml" \
  --emit-isbns "$work/isbns.txt" >"$work/sellersim.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q "sellersim ready" "$work/sellersim.log" && break; sleep 0.1; done
grep -q "sellersim ready" "$work/sellersim.log" || { echo "sellersim did not start:"; cat "$work/sellersim.log"; exit 1; }

list=$(printf '"%s", ' "${NODES[@]}")
for i in "${!NODES[@]}"; do
  { cat "$work/sim.toml"; printf '\n[cluster]\nnodes = [%s]\nnode = %d\n' "${list%, }" "$i"; } >"$work/node$i.toml"
  "$BIN/bookbroker" check-config "$work/node$i.toml" >/dev/null
  start_node "$i" "${NODES[$i]}"
done

"$BIN/bookbroker" haproxy-config --config "$work/node0.toml" --listen "$LISTEN" \
  --admin-socket "$work/haproxy.sock" >"$work/haproxy.cfg"
"$HAPROXY" -c -q -f "$work/haproxy.cfg"
"$HAPROXY" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
sleep 0.3
kill -0 "${pids[-1]}" 2>/dev/null || { echo "haproxy did not start (is $LISTEN free? set CLUSTER_LISTEN):"; cat "$work/haproxy.log"; exit 1; }
for i in "${!NODES[@]}"; do wait_up "$i" 10 || { echo "HAProxy does not see node $i:"; cat "$work/haproxy.log"; exit 1; }; done

base="http://$LISTEN"
isbn=$(head -1 "$work/isbns.txt")
order=demo-order-1
body="{\"isbn\":\"$isbn\",\"max_price\":10000,\"currency\":\"USD\",\"payment_token\":\"tok_ok_4242\",\"shipping_token\":\"ship_home\"}"
p=$(partition "$order")
cat <<EOF
bookbroker cluster: $N nodes behind HAProxy on loopback
  balancer   $base            (HAProxy; its own /healthz, /readyz and /metrics)
$(for i in "${!NODES[@]}"; do echo "  node $i     http://${NODES[$i]}   owns purchase partition $i   (pid ${node_pid[$i]})"; done)
  sellersim  payment provider and sellers of sellersim/scenarios/demo.toml
  files      $work (configs, data, logs, haproxy.cfg, haproxy.sock)
API key of customer "demo": $KEY

Quotes go to any node (leastconn):
curl -s -H 'Authorization: Bearer $KEY' '$base/v1/quotes?isbn=$isbn&currency=USD'

Purchases go to the node owning crc32(Idempotency-Key) mod $N ('$order' is partition $p):
curl -s -X POST -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\
  -H 'Idempotency-Key: $order' '$base/v1/purchases' \\
  -d '$body'
curl -s -H 'Authorization: Bearer $KEY' '$base/v1/purchases/<id from the answer, p$p-pur_...>'

Asked directly, another node answers 421 naming the owner:
curl -s -X POST -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\
  -H 'Idempotency-Key: $order' 'http://${NODES[$(((p + 1) % N))]}/v1/purchases' -d '{}'

The balancer's state and each node's metrics:
curl -s '$base/metrics' | grep haproxy_server_status
curl -s 'http://${NODES[0]}/metrics' | grep bookbroker_purchases
echo 'show servers state' | socat stdio $work/haproxy.sock

EOF

run() { # prints a command, runs it, prints its output
  echo "+ $*"
  bash -c "$*" 2>&1 | sed 's/^/  /'
}

if $drill; then
  victim=1
  echo "=== Failover drill: node $victim (${NODES[$victim]}) dies; its data directory serves partition $victim from $SPARE"
  keys=()
  for i in $(seq 1 200); do
    k="drill-$i"
    [ "$(partition "$k")" = "$victim" ] && keys+=("$k")
    [ "${#keys[@]}" -ge 4 ] && break
  done
  post() { # key [extra curl args]
    local k=$1; shift
    echo "curl -s -i -X POST -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' -H 'Idempotency-Key: $k' $* '$base/v1/purchases' -d '$body' | grep -E '^HTTP|^[Rr]etry-[Aa]fter|^\\{'"
  }
  run "$(post "${keys[0]}")"
  echo "# two purchases of partition $victim accepted asynchronously, then node $victim is killed"
  run "$(post "${keys[1]}" "-H 'Prefer: respond-async'")"
  run "$(post "${keys[2]}" "-H 'Prefer: respond-async'")"
  echo "+ kill -9 ${node_pid[$victim]}"
  # Reaped here with stderr closed: bash would otherwise report the killed job.
  { kill -9 "${node_pid[$victim]}"; wait "${node_pid[$victim]}"; } 2>/dev/null || true
  sleep 0.5
  run "$(post "${keys[3]}")"
  run "echo 'show stat' | socat stdio $work/haproxy.sock | awk -F, '\$2 == \"node$victim\" { print \$1 \"/\" \$2, \$18, \$74 }'"
  echo "# the dead node's data directory, the same partition, another address"
  echo "+ $BIN/bookbroker serve --config $work/node$victim.toml --listen $SPARE --cores $CORES --data-dir $work/data$victim &"
  start_node "$victim" "$SPARE"
  echo "  (pid ${node_pid[$victim]}, ready)"
  run "echo 'set server p$victim/node$victim addr ${SPARE%:*} port ${SPARE##*:}' | socat stdio $work/haproxy.sock"
  run "echo 'set server quotes/node$victim addr ${SPARE%:*} port ${SPARE##*:}' | socat stdio $work/haproxy.sock"
  wait_up "$victim" 10 || { echo "HAProxy does not see the moved node"; exit 1; }
  run "echo 'show stat' | socat stdio $work/haproxy.sock | awk -F, '\$2 == \"node$victim\" { print \$1 \"/\" \$2, \$18, \$74 }'"
  run "$(post "${keys[1]}")"
  run "$(post "${keys[2]}")"
  run "$(post "${keys[3]}")"
  run "curl -s http://$SPARE/metrics | grep -E '^bookbroker_purchases_(recovered|started)_total'"
  echo "=== drill done"
  echo
fi

echo "Press Ctrl-C to stop everything."
while true; do sleep 1; done
