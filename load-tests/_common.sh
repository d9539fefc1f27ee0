# Shell helpers shared by the load-test scripts (sourced, not run), and the paths they
# all use: HERE (load-tests/), REPO, PY (the venv's python unless PYTHON is set) and
# Postfix's smtp-source and smtp-sink (Debian's paths unless SMTP_SOURCE/SMTP_SINK are set).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
SMTP_SOURCE="${SMTP_SOURCE:-/usr/sbin/smtp-source}"
SMTP_SINK="${SMTP_SINK:-/usr/sbin/smtp-sink}"

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

# start_sink PORT OUT: Postfix's smtp-sink on 127.0.0.1:PORT, counting only, exiting at
# the MESSAGES-th message (SINK_PID, output in OUT); returns once it listens, so that a
# free_port asked afterwards is never its port. Needs SMTP_SINK and MESSAGES.
start_sink() {
  "$SMTP_SINK" -u nobody -c -M "$MESSAGES" "127.0.0.1:$1" 256 >"$2" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  wait_port "$1" 10 || { echo "smtp-sink did not start" >&2; exit 1; }
}

# send_load PORT: smtp-source sends MESSAGES copies of MSG_FILE (a lab order) over
# SESSIONS sessions to 127.0.0.1:PORT, then waits (bounded) until the sink started by
# start_sink has them all and exits. Returns 1 if smtp-source failed or the sink did not
# get every message.
send_load() {
  timeout 600 "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -d -F "$MSG_FILE" \
    -f cabinet@cabinet.test -t commandes@labo.test "127.0.0.1:$1" || return 1
  local deadline=$((SECONDS + 600))
  while kill -0 "$SINK_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.01; done
  ! kill -0 "$SINK_PID" 2>/dev/null
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

# portique_config FILE DATA_DIR PORT SINK_PORT ACTION DOMAIN: a benchmark's Portique
# config: SMTP on 127.0.0.1:PORT, one route *@DOMAIN -> ACTION -> relay in clear to
# 127.0.0.1:SINK_PORT, no admin console, no metrics. Optional, from the caller's
# variables: WORKERS (the `workers` setting), SMTP_TOML (more [smtp] lines) and
# EXTRA_TOML (appended: more tables).
portique_config() {
  cat >"$1" <<EOF
data_dir = "$2"
${WORKERS:+workers = \"$WORKERS\"}
log_level = "warning"

[smtp]
listen = "127.0.0.1:$3"
${SMTP_TOML:-}

[connectors.relay]
type = "relay"
host = "127.0.0.1"
port = $4
tls = "none"

[[routes]]
name = "labs"
match = ["*@$6"]
action = "$5"
connector = "relay"

[admin]
enabled = false

[metrics]
enabled = false

${EXTRA_TOML:-}
EOF
}

# start_gateway CONFIG ROSTER PORT CMD...: keys and the roster imported with CMD (a
# `portique` command line), then `CMD serve -c CONFIG` in the background (GATEWAY_PID,
# stopped on exit, log in $WORK/serve.log); returns once it listens on PORT.
start_gateway() {
  local config="$1" roster="$2" port="$3"
  shift 3
  "$@" keys init -c "$config" >/dev/null
  "$@" roster import -c "$config" "$roster" >/dev/null 2>&1
  "$@" serve -c "$config" >"$WORK/serve.log" 2>&1 &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  wait_port "$port" 60 || { echo "portique did not listen" >&2; tail -n 20 "$WORK/serve.log" >&2; exit 1; }
}
