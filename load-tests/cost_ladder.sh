#!/usr/bin/env bash
# The cost ladder: what each of Portique's components costs per relayed message, read off
# load-tests/python_floor.py with one component added at a time (see its docstring).
#
# Usage: load-tests/cost_ladder.sh [-m MESSAGES] [-s SESSIONS] [--rungs LIST]
#   LIST: comma-separated, from floor, aiosmtpd, audit, aiosmtpd+audit (default: all).
#
# Postfix's smtp-source (C) sends MESSAGES copies of one 2 KB lab order over SESSIONS
# sessions to python_floor.py (one process), which relays to Postfix's smtp-sink (C). Per
# rung: msg/s from the first connection to the last message at the sink, and the relay's
# user + system CPU per message (from /proc). The difference between two rungs is what the
# added component costs; `cpu_per_message.sh` gives the whole of `portique serve` on the
# same load. Needs /usr/sbin/smtp-source and smtp-sink (Debian postfix), run as root.
set -euo pipefail
MESSAGES=2000
SESSIONS=20
RUNGS="floor,aiosmtpd,audit,aiosmtpd+audit"
while [ $# -gt 0 ]; do
  case "$1" in
    -m) MESSAGES="$2"; shift 2 ;;
    -s) SESSIONS="$2"; shift 2 ;;
    --rungs) RUNGS="$2"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=load-tests/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
start_work portique-ladder

"$PY" "$HERE/messages.py" --out "$WORK/msg" --mix lab --count 1 --run ladder --lf >/dev/null
MSG_FILE=$(ls "$WORK"/msg/*.eml)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_rung() {  # run_rung NAME OPTIONS...
  local name="$1" port sink_port relay_pid ticks0 ticks1 started finished delivered=1
  shift
  sink_port=$(free_port)
  mkdir -p "$WORK/$name"
  start_sink "$sink_port" "$WORK/$name/sink.out"
  port=$(free_port)
  "$PY" "$HERE/python_floor.py" "$port" "$sink_port" "$WORK/$name" "$@" \
    >"$WORK/$name/relay.log" 2>&1 &
  relay_pid=$!
  PIDS+=("$relay_pid")
  wait_port "$port" 30 || { echo "python_floor.py did not listen" >&2; cat "$WORK/$name/relay.log" >&2; exit 1; }
  ticks0=$(cpu_ticks "$relay_pid")
  started=$(date +%s.%N)
  send_load "$port" || delivered=0
  finished=$(date +%s.%N)
  ticks1=$(cpu_ticks "$relay_pid")
  [ "$delivered" = 1 ] || { echo "$name: not every message reached the sink" >&2; exit 1; }
  kill -TERM "$relay_pid"
  wait "$relay_pid" 2>/dev/null || true
  "$PY" -c "
m = $MESSAGES; wall = $finished - $started; cpu = ($ticks1 - $ticks0) / $(getconf CLK_TCK)
print(f'{\"$name\":<16} {m} messages in {wall:.2f} s = {m / wall:8.1f} msg/s; relay CPU {1000 * cpu / m:.3f} ms per message')"
}

for rung in ${RUNGS//,/ }; do
  case "$rung" in
    floor) run_rung floor ;;
    aiosmtpd) run_rung aiosmtpd --inbound aiosmtpd ;;
    audit) run_rung audit --audit ;;
    aiosmtpd+audit) run_rung aiosmtpd+audit --inbound aiosmtpd --audit ;;
    *) echo "unknown rung: $rung" >&2; exit 2 ;;
  esac
done
