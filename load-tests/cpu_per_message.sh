#!/usr/bin/env bash
# CPU of `portique serve` per relayed message, for comparing two versions of the code.
#
# Usage: load-tests/cpu_per_message.sh [-m MESSAGES] [-s SESSIONS] [--code DIR] [--pipeline-cpu]
#                                      [--threads]
#
# Postfix's smtp-source (C) sends MESSAGES copies of one 2 KB lab order with planted
# patient data over SESSIONS sessions to `portique serve` (workers 1, roster imported,
# pseudonymising lab route), which relays to Postfix's smtp-sink (C). Prints msg/s from
# the first connection to the last message at the sink, and the gateway's user + system
# CPU per message, and each of the two (from /proc, the gateway process and its children).
# --code DIR runs the gateway from another checkout of this repository (e.g. a
# `git worktree` of an older commit) with this repository's venv: alternate runs of two
# checkouts to compare them on a machine whose speed drifts.
# --pipeline-cpu also times `process_message` inside the gateway (the thread CPU time of
# each call, through a wrapper the launcher installs on gateway.service) and prints its
# mean per message once the gateway has stopped: the pipeline's share of the figure.
# --threads also splits the CPU between the gateway's threads, by their OS names
# (gateway/threads.py; pools summed under their prefix, e.g. queue-io for queue-io_0..3;
# every live thread is listed, idle ones at 0.00).
# --callgrind DIR runs `serve` under valgrind's callgrind instead (one file per thread in
# DIR, counters zeroed once the gateway listens, dumped when the last message arrived) and
# prints the instructions per message of each thread that ran at least 1 % of them (thread
# 1 is the event loop; the audit writer is the next largest): a deterministic figure for
# comparing two versions of the code on a machine whose speed drifts (reproducible to
# ~1-3 %; the CPU figures above then measure valgrind, not the gateway). Needs valgrind.
# Needs /usr/sbin/smtp-source and smtp-sink (Debian postfix), run as root (smtp-sink
# drops to nobody).
set -euo pipefail

MESSAGES=2000
SESSIONS=20
CODE=""
PIPELINE_CPU=0
THREADS=0
CALLGRIND_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    -m) MESSAGES="$2"; shift 2 ;;
    -s) SESSIONS="$2"; shift 2 ;;
    --code) CODE="$(cd "$2" && pwd)"; shift 2 ;;
    --pipeline-cpu) PIPELINE_CPU=1; shift ;;
    --threads) THREADS=1; shift ;;
    --callgrind) CALLGRIND_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=load-tests/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# The CLI of $CODE (default: this checkout). A command, not a shell function: started in
# the background, its PID is the gateway's own (a function would run in a subshell, and
# stopping the subshell would leave the gateway running). PYTHONSAFEPATH: `python -c`
# puts the current directory ahead of PYTHONPATH, so run from a checkout it would import
# that checkout's gateway whatever --code says.
CODE_ENV=(env PYTHONSAFEPATH=1 "PYTHONPATH=${CODE:-$REPO}")
PORTIQUE=("${CODE_ENV[@]}" "$PY" -c
  'import sys; from gateway.cli import main; sys.argv[0] = "portique"; sys.exit(main())')
# With --pipeline-cpu, `serve` runs with process_message wrapped: thread CPU time summed
# per call, written to PIPELINE_REPORT when the process exits.
TIMED_SERVE='
import atexit, os, sys, time
import gateway.service as service
calls, seconds = [0], [0.0]
untimed = service.process_message
def timed(*args, **kwargs):
    started = time.thread_time()
    try:
        return untimed(*args, **kwargs)
    finally:
        seconds[0] += time.thread_time() - started
        calls[0] += 1
service.process_message = timed
def report():
    with open(os.environ["PIPELINE_REPORT"], "w") as out:
        out.write(f"{calls[0]} {seconds[0]}\n")
atexit.register(report)
from gateway.cli import main
sys.argv[0] = "portique"
sys.exit(main())'

start_work portique-cpu
echo "gateway code: $("${CODE_ENV[@]}" "$PY" -c 'import gateway, os; print(os.path.dirname(gateway.__file__))')"

"$PY" "$HERE/messages.py" --out "$WORK/msg" --mix lab --count 1 --run cpu --lf \
  --roster-csv "$WORK/roster.csv" >/dev/null
MSG_FILE=$(ls "$WORK"/msg/*.eml)
SINK_PORT=$(free_port)
start_sink "$SINK_PORT" "$WORK/sink.out"
PORT=$(free_port)
WORKERS=1 portique_config "$WORK/portique.toml" "$WORK/data" "$PORT" "$SINK_PORT" \
  pseudonymise labo.test
if [ -n "$CALLGRIND_DIR" ]; then
  command -v valgrind >/dev/null || { echo "--callgrind needs valgrind" >&2; exit 2; }
  rm -f "$CALLGRIND_DIR"/callgrind.out*
  "${PORTIQUE[@]}" keys init -c "$WORK/portique.toml" >/dev/null
  "${PORTIQUE[@]}" roster import -c "$WORK/portique.toml" "$WORK/roster.csv" >/dev/null 2>&1
  "${CODE_ENV[@]}" valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$CALLGRIND_DIR/callgrind.out" "${PORTIQUE[@]:3}" \
    serve -c "$WORK/portique.toml" >"$WORK/serve.log" 2>&1 &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  # Start-up under valgrind takes tens of seconds (imports, the scanners' compilation).
  wait_port "$PORT" 600 || { echo "portique did not listen" >&2; tail -n 20 "$WORK/serve.log" >&2; exit 1; }
  callgrind_control -z "$GATEWAY_PID" >/dev/null 2>&1
elif [ "$PIPELINE_CPU" = 1 ]; then
  start_gateway "$WORK/portique.toml" "$WORK/roster.csv" "$PORT" \
    "${CODE_ENV[@]}" "PIPELINE_REPORT=$WORK/pipeline.txt" "$PY" -c "$TIMED_SERVE"
else
  start_gateway "$WORK/portique.toml" "$WORK/roster.csv" "$PORT" "${PORTIQUE[@]}"
fi

cpu_ticks() {  # "user system" ticks of the gateway and its children
  local user=0 system=0 pid u s
  for pid in "$GATEWAY_PID" $(pgrep -P "$GATEWAY_PID" || true); do
    [ -r "/proc/$pid/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u)); system=$((system + s))
  done
  echo "$user $system"
}
thread_ticks() {  # "PID TID NAME TICKS" per thread of the gateway and its children
  local pid task
  for pid in "$GATEWAY_PID" $(pgrep -P "$GATEWAY_PID" || true); do
    for task in /proc/"$pid"/task/*; do
      [ -r "$task/stat" ] || continue
      # comm may hold spaces: the fields after its closing parenthesis are fixed.
      echo "$pid ${task##*/} $(tr ' ' '_' <"$task/comm") $(sed 's/.*) //' "$task/stat" | awk '{print $12 + $13}')"
    done
  done
}
read -r user0 system0 < <(cpu_ticks)
[ "$THREADS" = 1 ] && thread_ticks >"$WORK/threads0.txt"
started=$(date +%s.%N)
delivered=1
send_load "$PORT" || delivered=0
finished=$(date +%s.%N)
read -r user1 system1 < <(cpu_ticks)
[ "$THREADS" = 1 ] && thread_ticks >"$WORK/threads1.txt"
[ "$delivered" = 1 ] || { echo "not every message reached the sink" >&2; exit 1; }
if [ -n "$CALLGRIND_DIR" ]; then
  callgrind_control -d "$GATEWAY_PID" >/dev/null 2>&1
  # The dump's files: callgrind.out.1-NN, one per thread NN; "summary:" is its total.
  "$PY" - "$CALLGRIND_DIR" "$MESSAGES" <<'PY'
import pathlib, re, sys
folder, messages = pathlib.Path(sys.argv[1]), int(sys.argv[2])
threads = {}
for path in folder.glob("callgrind.out.1-*"):
    total = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.M)
    threads[int(path.name.rsplit("-", 1)[1])] = int(total.group(1)) if total else 0
everything = sum(threads.values()) or 1
for number, count in sorted(threads.items(), key=lambda item: -item[1]):
    if count >= everything / 100:
        name = " (event loop)" if number == 1 else ""
        print(f"  callgrind thread {number}{name}: {count / messages:,.0f} instructions per message")
print(f"  callgrind, all threads: {everything / messages:,.0f} instructions per message ({folder})")
PY
fi
"$PY" -c "
m = $MESSAGES; wall = $finished - $started; hz = $(getconf CLK_TCK)
user = ($user1 - $user0) / hz; system = ($system1 - $system0) / hz; cpu = user + system
print(f'{m} messages in {wall:.2f} s = {m / wall:.1f} msg/s; gateway CPU {cpu:.2f} s = {1000 * cpu / m:.2f} ms per message'
      f' (user {1000 * user / m:.2f}, system {1000 * system / m:.2f})')"
if [ "$THREADS" = 1 ]; then
  "$PY" - "$WORK/threads0.txt" "$WORK/threads1.txt" "$MESSAGES" "$(getconf CLK_TCK)" <<'PY'
import re, sys
def read(path):
    threads = {}
    for pid, tid, name, ticks in (line.split() for line in open(path)):
        # A process's main thread (its event loop) has the process's id; other threads
        # with no name of their own (the loop's default executor) keep the program's.
        threads[tid] = ("main (event loop)" if tid == pid else name, int(ticks))
    return threads
before, after, messages, hz = read(sys.argv[1]), read(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
by_name = {}
for tid, (name, ticks) in after.items():
    name = re.sub(r"_\d+$", "", name)  # a pool's threads under their prefix
    by_name[name] = by_name.get(name, 0) + ticks - before.get(tid, (name, 0))[1]
total = sum(by_name.values()) or 1
for name, ticks in sorted(by_name.items(), key=lambda item: -item[1]):
    print(f"  thread {name:<16} {1000 * ticks / hz / messages:5.2f} ms per message ({100 * ticks / total:4.1f} %)")
PY
fi
if [ "$PIPELINE_CPU" = 1 ]; then
  kill -TERM "$GATEWAY_PID"
  wait "$GATEWAY_PID" 2>/dev/null || true
  [ -s "$WORK/pipeline.txt" ] || { echo "the gateway wrote no pipeline timing" >&2; exit 1; }
  read -r calls seconds <"$WORK/pipeline.txt"
  "$PY" -c "
calls = $calls; seconds = $seconds
print(f'pipeline (process_message) in the gateway: {calls} calls, {1000 * seconds / max(calls, 1):.2f} ms of CPU per call')"
fi
