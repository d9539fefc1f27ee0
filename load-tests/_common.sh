# Shell helpers shared by the load-test scripts (sourced, not run). Needs $PY.

# free_port: a loopback TCP port free at the moment of asking.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT SECONDS: until something listens on 127.0.0.1:PORT (1 if it never does).
wait_port() {
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# start_work NAME: a work folder WORK under $TMPDIR (mode 755: smtp-sink writes as nobody)
# and PIDS, a list of processes to stop; on exit both are cleaned up.
start_work() {
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  chmod 755 "$WORK"
  PIDS=()
  trap _stop_work EXIT
}
_stop_work() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
