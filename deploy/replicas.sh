#!/usr/bin/env bash
# Run REPLICAS Voila replicas on loopback ports and HAProxy on 127.0.0.1:PORT in front of them, in
# the foreground; Ctrl+C stops them all. Each replica's log: $LOGS/replica-N.log.
# The "That's wrong" store is shared: BEAR_FEEDBACK_URL (PostgreSQL) when set, else one SQLite file.
# A replica that ends, or stops answering its health check for CHECKS_TO_RESTART checks in a row
# (every CHECK_EVERY seconds), is killed and started again: HAProxy sends its visitors elsewhere
# meanwhile, and takes it back once its checks pass.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=${REPLICAS:-3} PORT=${PORT:-8080} FIRST=${FIRST_REPLICA_PORT:-8871} VOILA=${VOILA:-voila}
CHECK_EVERY=${CHECK_EVERY:-2} CHECKS_TO_RESTART=${CHECKS_TO_RESTART:-3} START_GRACE=${START_GRACE:-60}
LOGS=${LOGS:-$(mktemp -d)}
export BEAR_LB_BIND="127.0.0.1:$PORT"
# The servers import this checkout's package (voila.json), its template and page hook (share/jupyter), as edited.
export JUPYTER_PATH="$PWD/share/jupyter" JUPYTER_CONFIG_PATH="$PWD/share/jupyter/config"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export BEAR_FEEDBACK_DB="${BEAR_FEEDBACK_DB:-$PWD/feedback.db}"
command -v haproxy >/dev/null || { echo "replicas: haproxy is not installed (Debian/Ubuntu: sudo apt-get install haproxy)" >&2; exit 2; }
command -v curl >/dev/null || { echo "replicas: curl is not installed (it checks the replicas' health)" >&2; exit 2; }

declare -a pids started failures
balancer=
stop() {
  trap - INT TERM EXIT
  kill -CONT "${pids[@]}" 2>/dev/null || true  # a frozen replica can't end on TERM
  kill "${pids[@]}" $balancer 2>/dev/null || true
  wait 2>/dev/null || true
  # And end here: bash resumes where the signal came, and a check that found a replica ended by the same signal
  # would start it again, outliving the set.
  exit 0
}
trap stop INT TERM EXIT

start() {  # start replica $1 (1-based) on its port
  local i=$1 port=$((FIRST + $1 - 1))
  "$VOILA" app.ipynb --no-browser --port="$port" --Voila.ip=127.0.0.1 >>"$LOGS/replica-$i.log" 2>&1 &
  pids[i]=$! started[i]=$SECONDS failures[i]=0
}

healthy() {  # does replica $1 answer its health check within 2 s?
  curl --silent --fail --max-time 2 --output /dev/null "http://127.0.0.1:$((FIRST + $1 - 1))/voila/static/health.txt"
}

check() {  # restart replica $1 if it ended, or failed its last CHECKS_TO_RESTART checks once started
  local i=$1
  if ! kill -0 "${pids[i]}" 2>/dev/null; then
    echo "replicas: replica $i ended; starting it again" >&2
  elif healthy "$i"; then
    failures[i]=0; return
  elif (( SECONDS - started[i] < START_GRACE || ++failures[i] < CHECKS_TO_RESTART )); then
    return
  else
    echo "replicas: replica $i stopped answering its health check; killing it and starting it again" >&2
    kill -KILL "${pids[i]}" 2>/dev/null || true
  fi
  wait "${pids[i]}" 2>/dev/null || true
  start "$i"
}

cfg="$LOGS/haproxy.cfg"
cp deploy/haproxy.cfg "$cfg"
for i in $(seq 1 "$REPLICAS"); do
  start "$i"
  echo "    server r$i 127.0.0.1:$((FIRST + i - 1)) cookie r$i" >>"$cfg"
done
haproxy -f "$cfg" -db >"$LOGS/haproxy.log" 2>&1 &
balancer=$!
echo "replicas: $REPLICAS Voila replicas behind http://127.0.0.1:$PORT (logs in $LOGS); Ctrl+C stops them"
# Only HAProxy ending ends the whole set.
while kill -0 "$balancer" 2>/dev/null; do
  for i in $(seq 1 "$REPLICAS"); do check "$i"; done
  sleep "$CHECK_EVERY"
done
echo "replicas: haproxy ended (see $LOGS/haproxy.log); stopping the replicas" >&2
