#!/usr/bin/env bash
# Run REPLICAS Voila replicas on loopback ports and HAProxy on 127.0.0.1:PORT in front of them, in
# the foreground; Ctrl+C stops them all. Each replica's log: $LOGS/replica-N.log.
# The "That's wrong" store is shared: BEAR_FEEDBACK_URL (PostgreSQL) when set, else one SQLite file.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=${REPLICAS:-3} PORT=${PORT:-8080} FIRST=${FIRST_REPLICA_PORT:-8871} VOILA=${VOILA:-voila}
LOGS=${LOGS:-$(mktemp -d)}
export JUPYTER_PATH="$PWD/share/jupyter" BEAR_LB_BIND="127.0.0.1:$PORT"
export BEAR_FEEDBACK_DB="${BEAR_FEEDBACK_DB:-$PWD/feedback.db}"
command -v haproxy >/dev/null || { echo "replicas: haproxy is not installed (Debian/Ubuntu: sudo apt-get install haproxy)" >&2; exit 2; }

pids=()
stop() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop INT TERM EXIT

cfg="$LOGS/haproxy.cfg"
cp deploy/haproxy.cfg "$cfg"
for i in $(seq 1 "$REPLICAS"); do
  port=$((FIRST + i - 1))
  "$VOILA" app.ipynb --no-browser --port="$port" --Voila.ip=127.0.0.1 --template=bear >"$LOGS/replica-$i.log" 2>&1 &
  pids+=($!)
  echo "    server r$i 127.0.0.1:$port cookie r$i" >>"$cfg"
done
haproxy -f "$cfg" -db >"$LOGS/haproxy.log" 2>&1 &
balancer=$!
pids+=("$balancer")
echo "replicas: $REPLICAS Voila replicas behind http://127.0.0.1:$PORT (logs in $LOGS); Ctrl+C stops them"
# A replica that stops is HAProxy's business: it sends that replica's visitors elsewhere. Only
# HAProxy ending ends the whole set.
wait "$balancer" || true
echo "replicas: haproxy ended (see $LOGS/haproxy.log); stopping the replicas" >&2
