#!/usr/bin/env bash
# Side by side: a plain Postfix relay and Portique with a pseudonymising lab route, same
# machine, same run, same load, same sink.
#
# Load: Postfix's smtp-source (C), S sessions, M copies of one 2 KB lab order carrying
#       invented patient data (load-tests/messages.py), to commandes@labo.test.
# Sink: Postfix's smtp-sink (C), counting only; it exits after M messages (-M), so the
#       figure "delivered msg/s" is M / (time from smtp-source's start, i.e. before the
#       first connection, until smtp-sink has received the last message). It dumps
#       each transaction to a file (-d), read afterwards to count the lab deliveries, on
#       tmpfs (/dev/shm, else the temp dir; SINK_TMPDIR overrides). The sink stands for
#       the lab's MTA, on another machine: with its dumps on the relays' own disk, it
#       spent ~6 times more CPU of the shared cores (ext4's file creation) than on
#       tmpfs, and its dirty pages were flushed by Portique's syncfs(2) group commits
#       (load-tests/README.md, "Eleventh session").
# Postfix: a private instance (own config_directory, queue_directory, data_directory
#       under a temp dir). main.cf is Debian's default (/usr/share/postfix/main.cf.debian)
#       plus only relayhost, mynetworks, inet_interfaces and the private instance's paths;
#       master.cf is Debian's, with the smtpd listener on a non-standard loopback port and
#       chroot off (a private queue dir has no chroot jail files).
# Portique: `portique serve -c FILE` with a route labs -> pseudonymise -> relay to the
#       same smtp-sink port. A second row with a `deliver` route (the message is still
#       parsed and scanned, for the audit trail and the redacted subject of a later
#       bounce, but not rewritten or verified) is NOT the bar.
# Floor: load-tests/python_floor.py, the least a relay in Python does (SMTP in, fsync'ed
#       group commit, SMTP out, no gateway work), as many processes as Portique's
#       workers: a reference for how much of the distance to Postfix is Python's, NOT the bar.
# Afterwards (unless --no-verify) the Python driver (load-tests/driver.py) sends a few
# hundred generated messages through Portique to load-tests/sink.py on the same port and
# checks that every one arrived and none carries a planted name/NIR/phone/e-mail; then it
# measures latency at half the maximum sustained rate (see latency_run).
#
# Usage: load-tests/compare_postfix.sh [-m MESSAGES] [-s SESSIONS]
#            [--rows postfix,pseudonymise,deliver,floor] [--workers N|auto] [--no-verify]
#            [--verify-messages N] [--latency-seconds S] [--settle S] [--keep] [--timeout SEC]
#            [--instances K]  (K independent Portique processes, own data_dir each, the
#                             smtp-source sessions and messages split between them: a
#                             reference for workers = N, which shares one data_dir; not the bar)
#            [--portique-toml FILE]  (TOML appended to Portique's config, e.g. a [queue] section)
#            [--profile DIR]   (py-spy, from PyPI into .venv: folded stacks + top functions)
#            [--profile-gil]   (with --profile: sample only threads holding the GIL, i.e.
#                              Python CPU time; without it, wall time per thread)
# The temp dir is made under $TMPDIR (default /tmp); it must be reachable by the postfix
# and nobody users (smtp-sink drops to nobody).
# Exit status: 0 when every run delivered every message (and verification passed), else 1.
# Bounded: each timed run is killed after --timeout seconds (default 300); every process
# started here is stopped on exit (trap), the temp dir is removed unless --keep.
set -euo pipefail

# shellcheck source=load-tests/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
PORTIQUE="${PORTIQUE:-$REPO/.venv/bin/portique}"

MESSAGES=2000        # per timed run; ~10 s of Postfix on 2 cores
SESSIONS=20          # the issue's load: 20 parallel smtp-source sessions
TIMEOUT=300          # seconds per timed run, so a stuck relay cannot hang the script
ROWS="postfix,pseudonymise,deliver,floor"
INSTANCES=1          # --instances K: K independent Portique processes, load split evenly
WORKERS="auto"
VERIFY=1
KEEP=0
VERIFY_MESSAGES=300  # driver verification run through Portique
LATENCY_SECONDS=20   # fixed-rate latency run at half the maximum sustained rate
EXTRA_TOML=""        # --portique-toml FILE: appended to Portique's config (e.g. [queue] tuning)
PROFILE_DIR=""       # --profile DIR: py-spy samples of Portique during its timed runs
PROFILE_GIL=""       # --profile-gil: py-spy --gil (CPU time under the GIL, not wall time)
SETTLE=30            # seconds the driver waits for the last deliveries of a verification run

while [ $# -gt 0 ]; do
  case "$1" in
    -m) MESSAGES="$2"; shift 2 ;;
    -s) SESSIONS="$2"; shift 2 ;;
    --rows) ROWS="$2"; shift 2 ;;
    --instances) INSTANCES="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --no-verify) VERIFY=0; shift ;;
    --verify-messages) VERIFY_MESSAGES="$2"; shift 2 ;;
    --latency-seconds) LATENCY_SECONDS="$2"; shift 2 ;;
    --settle) SETTLE="$2"; shift 2 ;;
    --portique-toml) EXTRA_TOML="$(cat "$2")"; shift 2 ;;
    --profile) PROFILE_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --profile-gil) PROFILE_GIL="--gil"; shift ;;
    --keep) KEEP=1; shift ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

log() { echo "[compare] $*" >&2; }
want() { [[ ",$ROWS," == *",$1,"* ]]; }
for row in ${ROWS//,/ }; do
  case "$row" in postfix|pseudonymise|deliver|floor) ;; *) echo "unknown row: $row" >&2; exit 2 ;; esac
done

# --- Postfix from Debian if absent ------------------------------------------------------
install_postfix() {
  if [ -x /usr/sbin/postfix ] && [ -x "$SMTP_SOURCE" ] && [ -x "$SMTP_SINK" ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "Postfix is not installed and this is not root: apt-get install postfix" >&2
    exit 2
  fi
  log "installing postfix from Debian (No configuration)"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postfix >/dev/null
}
install_postfix  # smtp-source and smtp-sink are the load and the sink for every row
[ -x "$SMTP_SOURCE" ] && [ -x "$SMTP_SINK" ] || { echo "need $SMTP_SOURCE and $SMTP_SINK (Debian postfix)" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portique-compare.XXXXXX")"
chmod 755 "$WORK"
# smtp-sink's dumps: tmpfs when there is one with room for a row's dumps (a page or two
# per message; each row's are deleted once counted), else under WORK (see the header).
SINK_TMPDIR="${SINK_TMPDIR:-/dev/shm}"
SINK_DIR=""
if [ -d "$SINK_TMPDIR" ] && [ -w "$SINK_TMPDIR" ] \
  && [ "$(df --output=avail -k "$SINK_TMPDIR" 2>/dev/null | tail -n 1)" -gt $((MESSAGES * 8 + 1024)) ]; then
  SINK_DIR="$(mktemp -d "$SINK_TMPDIR/portique-sink.XXXXXX")"
  chmod 755 "$SINK_DIR"
  log "smtp-sink dumps in $SINK_DIR"
fi
PIDS=()
POSTFIX_CONF=""
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  if [ -n "$POSTFIX_CONF" ]; then /usr/sbin/postfix -c "$POSTFIX_CONF" stop >/dev/null 2>&1; fi
  if [ "$KEEP" = 1 ]; then log "kept $WORK ${SINK_DIR}"; else rm -rf "$WORK" ${SINK_DIR:+"$SINK_DIR"}; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
cpu_ticks() {  # user+system clock ticks of a process and its waited-for children
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"
}

# The one message smtp-source sends: a 2 KB lab order with planted patient data. LF line
# ends, because smtp-source -F appends CRLF to each line.
"$PY" "$HERE/messages.py" --out "$WORK/msg" --mix lab --count 1 --run compare --lf \
  --roster-csv "$WORK/roster.csv" >/dev/null
MSG_FILE="$(ls "$WORK"/msg/*.eml)"
MSG_BYTES=$(wc -c <"$MSG_FILE")
SINK_PORT=$(free_port)

# timed_run NAME SMTP_PORT: smtp-sink takes M messages, smtp-source sends them.
# smtp-sink dumps each transaction (-d, no fsync) so that the deliveries can be told apart
# from anything else the relay may send to the same sink (e.g. a hold notice to the
# sender): only messages for commandes@labo.test count as delivered.
# Prints "NAME SECONDS DELIVERED OTHER" on stdout.
timed_run() {
  local name="$1" ports="$2" sink_out="$WORK/sink-$1.out" dump="${SINK_DIR:-$WORK}/dump-$1" sink_pid src_rc=0 t0 t1
  mkdir -p "$dump"
  chown nobody "$dump"
  "$SMTP_SINK" -u nobody -c -M "$MESSAGES" -d "$dump/m." "127.0.0.1:$SINK_PORT" 256 >"$sink_out" 2>&1 &
  sink_pid=$!
  wait_port "$SINK_PORT" 10 || { log "smtp-sink did not start"; return 1; }
  local cpu0 k i port msgs sess rc
  local -a list src_pids=()
  IFS=, read -r -a list <<<"$ports"
  k=${#list[@]}
  cpu0=$(cpu_ticks_all)
  local machine0 workers0
  machine0=$(machine_ticks)
  workers0=$(worker_ticks)
  t0=$(now)
  # One smtp-source per target port; sessions and messages split evenly (the first takes
  # the remainder), all started together.
  for i in "${!list[@]}"; do
    port="${list[$i]}"
    msgs=$((MESSAGES / k)); sess=$((SESSIONS / k))
    if [ "$i" = 0 ]; then msgs=$((msgs + MESSAGES % k)); sess=$((sess + SESSIONS % k)); fi
    [ "$sess" -ge 1 ] || sess=1
    timeout "$TIMEOUT" "$SMTP_SOURCE" -s "$sess" -m "$msgs" -d -F "$MSG_FILE" \
      -f secretariat@cabinet-dentaire.test -t commandes@labo.test -M load.test \
      "127.0.0.1:$port" >"$WORK/source-$name-$i.out" 2>&1 &
    src_pids+=($!)
  done
  for i in "${!src_pids[@]}"; do
    rc=0
    wait "${src_pids[$i]}" || rc=$?
    [ "$rc" = 0 ] || { src_rc=$rc; log "$name: smtp-source $i exit $rc: $(tail -n 3 "$WORK/source-$name-$i.out" | tr '\n' ' ')"; }
  done
  # smtp-sink exits by itself after M messages; bound the wait.
  local deadline=$((SECONDS + TIMEOUT))
  while kill -0 "$sink_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.01; done
  t1=$(now)
  if kill -0 "$sink_pid" 2>/dev/null; then
    log "$name: timed out after ${TIMEOUT} s"
    kill "$sink_pid" 2>/dev/null || true
  fi
  wait "$sink_pid" 2>/dev/null || true
  # How busy the whole machine was (every process: relay, smtp-source, smtp-sink, others):
  # a relay that leaves cores idle is held back by something other than CPU.
  local machine1
  machine1=$(machine_ticks)
  log "$name: the machine was busy $(awk -v a="$machine0" -v b="$machine1" -v n="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; if (d <= 0) d = 1
    printf "%.2f", n * (y[1] - x[1]) / d }') of $(nproc) cores"
  if [ -n "${PORTIQUE_PID:-}" ]; then
    local cpu_s entry split=""
    cpu_s=$(echo "($(cpu_ticks_all) - $cpu0) / $(getconf CLK_TCK)" | bc -l)
    log "$name: portique used $(printf '%.2f' "$cpu_s") s of CPU in $(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)") s of wall time"
    # Per worker process: connections stay with the worker the kernel gave them to
    # (SO_REUSEPORT), so an uneven split shows here.
    for entry in $workers0; do
      split="$split $(echo "($(cpu_ticks "${entry%%:*}") - ${entry##*:}) / $(getconf CLK_TCK)" | bc -l | xargs printf '%.2f') s"
    done
    [ -z "$split" ] || log "$name: CPU per worker process:$split"
  fi
  local lab other
  lab=$(grep -l -m1 '^X-Rcpt-Args: <commandes@labo.test>' -r "$dump" 2>/dev/null | wc -l)
  other=$(( $(find "$dump" -type f | wc -l) - lab ))
  [ "$other" = 0 ] || log "$name: $other message(s) at the sink were not lab deliveries (e.g. hold notices)"
  [ "$KEEP" = 1 ] || rm -rf "$dump"
  echo "$name $(echo "$t1 - $t0" | bc -l) $lab $other"
}

machine_ticks() {  # "busy total" clock ticks of the whole machine since boot (/proc/stat)
  awk '/^cpu /{busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat
}

worker_ticks() {  # "PID:TICKS ..." of every Portique worker process (children of an instance)
  local pid child
  for pid in $PORTIQUE_PID ${EXTRA_PIDS:-}; do
    for child in $(pgrep -P "$pid" 2>/dev/null); do echo -n "$child:$(cpu_ticks "$child") "; done
  done
}

cpu_ticks_all() {  # summed over every running Portique instance and its worker processes
  local total=0 pid child
  for pid in $PORTIQUE_PID ${EXTRA_PIDS:-}; do
    total=$((total + $(cpu_ticks "$pid")))
    for child in $(pgrep -P "$pid" 2>/dev/null); do total=$((total + $(cpu_ticks "$child"))); done
  done
  echo "$total"
}

# --- Postfix ------------------------------------------------------------------------------
start_postfix() {
  local port="$1"
  POSTFIX_CONF="$WORK/postfix/etc"
  mkdir -p "$POSTFIX_CONF" "$WORK/postfix/spool" "$WORK/postfix/data"
  cp /usr/share/postfix/main.cf.debian "$POSTFIX_CONF/main.cf"
  if [ -f /usr/share/postfix/master.cf.dist ]; then
    cp /usr/share/postfix/master.cf.dist "$POSTFIX_CONF/master.cf"
  else
    cp /etc/postfix/master.cf "$POSTFIX_CONF/master.cf"
  fi
  cp -r /etc/postfix/dynamicmaps.cf /etc/postfix/dynamicmaps.cf.d "$POSTFIX_CONF/" 2>/dev/null || true
  chown root:root "$WORK/postfix" "$POSTFIX_CONF"
  chown postfix:postfix "$WORK/postfix/data"  # postfix-script refuses to start otherwise
  postconf -c "$POSTFIX_CONF" -e \
    "queue_directory = $WORK/postfix/spool" \
    "data_directory = $WORK/postfix/data" \
    "relayhost = [127.0.0.1]:$SINK_PORT" \
    "mynetworks = 127.0.0.0/8" \
    "inet_interfaces = loopback-only"
  # The listener on a non-standard port; chroot off because a private queue dir has no
  # jail files (etc/services, resolv.conf). Everything else is Debian's master.cf.
  postconf -c "$POSTFIX_CONF" -M# smtp/inet
  postconf -c "$POSTFIX_CONF" -M "127.0.0.1:$port/inet = 127.0.0.1:$port inet n - n - - smtpd"
  postconf -c "$POSTFIX_CONF" -F '*/*/chroot = n'
  /usr/sbin/postfix -c "$POSTFIX_CONF" check
  /usr/sbin/postfix -c "$POSTFIX_CONF" start >"$WORK/postfix-start.out" 2>&1 \
    || { cat "$WORK/postfix-start.out" >&2; return 1; }
  wait_port "$port" 20 || { log "postfix did not listen on $port"; return 1; }
}

# --- Portique -----------------------------------------------------------------------------
write_portique_config() {  # write_portique_config FILE PORT ACTION [INSTANCE]
  portique_config "$1" "$WORK/portique-$3${4:+-$4}" "$2" "$SINK_PORT" "$3" labo.test
}

PORTIQUE_PID=""
EXTRA_PIDS=""   # instances 1..K-1 (--instances)
PORTIQUE_PORTS=""
launch_instance() {  # launch_instance ACTION PORT INSTANCE -> pid in LAUNCHED
  local cfg="$WORK/portique-$1${3:+-$3}.toml" logf="$WORK/portique-$1${3:+-$3}.log"
  write_portique_config "$cfg" "$2" "$1" "$3"
  "$PORTIQUE" keys init -c "$cfg" >/dev/null
  if "$PORTIQUE" --help 2>/dev/null | grep -qw roster; then
    "$PORTIQUE" roster import -c "$cfg" "$WORK/roster.csv" >/dev/null 2>&1 \
      || log "roster import failed: names may go undetected"
  fi
  "$PORTIQUE" serve -c "$cfg" >"$logf" 2>&1 &
  LAUNCHED=$!
  PIDS+=("$LAUNCHED")
  wait_port "$2" 30 || { log "portique did not listen on $2"; tail -n 20 "$logf" >&2; return 1; }
  # With workers > 1 the port answers as soon as worker 0 listens; the start-up line
  # comes once every worker does (gateway/workers.py), so the load sees them all.
  local deadline=$((SECONDS + 60))
  until grep -q "listening on" "$logf" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "portique did not report ready"; tail -n 20 "$logf" >&2; return 1; }
    sleep 0.1
  done
}
start_portique() {  # start_portique ACTION PORT: instance 0 on PORT, others on free ports
  local i port
  launch_instance "$1" "$2" ""
  PORTIQUE_PID=$LAUNCHED
  PORTIQUE_PORTS="$2"
  EXTRA_PIDS=""
  for ((i = 1; i < INSTANCES; i++)); do
    port=$(free_port)
    launch_instance "$1" "$port" "$i"
    EXTRA_PIDS="$EXTRA_PIDS $LAUNCHED"
    PORTIQUE_PORTS="$PORTIQUE_PORTS,$port"
  done
}
stop_portique() {
  local pid deadline
  for pid in $PORTIQUE_PID $EXTRA_PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $PORTIQUE_PID $EXTRA_PIDS; do
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PORTIQUE_PID=""
  EXTRA_PIDS=""
}

# py-spy around a timed run: every thread (the pipeline runs in executor threads) and
# subprocess, idle frames excluded, 250 samples/s, folded stacks in PROFILE_DIR/ROW.folded.
PYSPY_PID=""
profile_start() {
  [ -n "$PROFILE_DIR" ] || return 0
  local pyspy="${PYSPY:-$REPO/.venv/bin/py-spy}"
  [ -x "$pyspy" ] || { log "py-spy not found ($pyspy): $REPO/.venv/bin/pip install py-spy"; return 0; }
  "$pyspy" record --pid "$PORTIQUE_PID" --subprocesses --threads --rate 250 --format raw $PROFILE_GIL \
    -o "$PROFILE_DIR/$1.folded" >"$PROFILE_DIR/$1.pyspy.log" 2>&1 &
  PYSPY_PID=$!
  PIDS+=("$PYSPY_PID")
  sleep 1  # let py-spy attach before the load starts
}
profile_stop() {
  [ -n "$PYSPY_PID" ] || return 0
  kill -INT "$PYSPY_PID" 2>/dev/null || true
  wait "$PYSPY_PID" 2>/dev/null || true
  PYSPY_PID=""
  "$PY" "$HERE/driver.py" --summarise-profile "$PROFILE_DIR/$1.folded" >"$PROFILE_DIR/$1.top.txt" 2>&1 || true
  log "profile of the $1 run: $PROFILE_DIR/$1.folded, top functions in $PROFILE_DIR/$1.top.txt"
}

# verify ACTION PORT EXPECT: driver + Python verifying sink on SINK_PORT through the gateway.
verify_through() {
  local port="$2" expect="$3" rate_json="$WORK/verify-$1.json"
  "$PY" "$HERE/driver.py" --port "$port" --sink-port "$SINK_PORT" -n "$SESSIONS" \
    -m "$VERIFY_MESSAGES" --mix lab --expect "$expect" --settle "$SETTLE" --json "$rate_json"
}

# latency_run ROW PORT EXPECT: the driver at half the maximum sustained rate, for
# LATENCY_SECONDS, 2 KB lab orders; prints end of DATA -> sink p50/p95/p99. The sink
# runs as its own process (sink.py, arrivals timestamped with the system-wide monotonic
# clock as they come): in the driver's process, its arrival times waited behind the
# driver's own sending at these rates.
# The maximum: the driver and its sink are Python and share the 2 cores with the gateway,
# so together they may sustain less than the gateway reached under the C load. Both are
# measured (a max-rate run of the driver first) and the lower one is halved.
latency_run() {
  local row="portique-$1" rate harness n report="$WORK/arrivals-$1.jsonl" sink_pid
  [ "$LATENCY_SECONDS" != 0 ] && [ "${DELIVERED[$row]:-0}" = "$MESSAGES" ] || return 0
  start_latency_sink "$WORK/max-arrivals-$1.jsonl" || return 0
  "$PY" "$HERE/driver.py" --port "$2" --sink-report "$WORK/max-arrivals-$1.jsonl" \
    -n "$SESSIONS" -m "$MESSAGES" --mix lab --expect "$3" --settle "$SETTLE" \
    --json "$WORK/max-$1.json" >"$WORK/max-$1.out" 2>&1 || STATUS=1
  stop_latency_sink
  harness=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["delivered_per_s"])' \
    "$WORK/max-$1.json" 2>/dev/null || echo 0)
  rate=$(echo "$MESSAGES / ${SECS[$row]}" | bc -l)
  log "$1: maximum sustained: $(printf '%.1f' "$rate") msg/s under smtp-source," \
    "$(printf '%.1f' "$harness") msg/s with the Python driver and sink"
  if [ "$(echo "$harness > 0 && $harness < $rate" | bc -l)" = 1 ]; then rate=$harness; fi
  rate=$(echo "$rate / 2" | bc -l)
  n=$(printf '%.0f' "$(echo "$rate * $LATENCY_SECONDS" | bc -l)")
  log "$1: latency at half the maximum sustained rate: $(printf '%.1f' "$rate") msg/s for ${LATENCY_SECONDS} s"
  start_latency_sink "$report" || return 0
  "$PY" "$HERE/driver.py" --port "$2" --sink-report "$report" -n "$SESSIONS" \
    --rate "$rate" -m "$n" --mix lab --expect "$3" --settle "$SETTLE" \
    >"$WORK/latency-$1.out" 2>&1 || STATUS=1
  stop_latency_sink
  cat "$WORK/latency-$1.out" >&2
}
start_latency_sink() {  # start_latency_sink REPORT: sink.py on SINK_PORT, its own process
  "$PY" "$HERE/sink.py" --port "$SINK_PORT" --report "$1" 2>>"$WORK/latency-sink.log" &
  LATENCY_SINK_PID=$!
  PIDS+=("$LATENCY_SINK_PID")
  wait_port "$SINK_PORT" 20 || { log "sink.py did not listen on $SINK_PORT"; STATUS=1; return 1; }
}
stop_latency_sink() {
  kill -TERM "$LATENCY_SINK_PID" 2>/dev/null || true
  wait "$LATENCY_SINK_PID" 2>/dev/null || true
}

# --- runs -----------------------------------------------------------------------------------
declare -A SECS DELIVERED OTHER
STATUS=0
record() {  # record "NAME SECONDS DELIVERED OTHER"
  local name secs got other
  read -r name secs got other <<<"$1"
  SECS[$name]=$secs
  DELIVERED[$name]=$got
  OTHER[$name]=$other
  [ "$got" = "$MESSAGES" ] || STATUS=1
}

if want postfix; then
  PF_PORT=$(free_port)
  log "postfix: private instance on 127.0.0.1:$PF_PORT, relayhost [127.0.0.1]:$SINK_PORT"
  start_postfix "$PF_PORT"
  record "$(timed_run postfix "$PF_PORT")"
  /usr/sbin/postfix -c "$POSTFIX_CONF" stop >/dev/null 2>&1 || true
  POSTFIX_CONF=""
fi

if want pseudonymise; then
  PQ_PORT=$(free_port)
  log "portique (pseudonymise): 127.0.0.1:$PQ_PORT, workers=$WORKERS"
  start_portique pseudonymise "$PQ_PORT"
  profile_start pseudonymise
  record "$(timed_run portique-pseudonymise "$PORTIQUE_PORTS")"
  profile_stop pseudonymise
  if [ "$VERIFY" = 1 ]; then
    log "verifying $VERIFY_MESSAGES generated messages through the pseudonymising route"
    verify_through pseudonymise "$PQ_PORT" pseudonymised >"$WORK/verify.out" 2>&1 || STATUS=1
    cat "$WORK/verify.out" >&2
    latency_run pseudonymise "$PQ_PORT" pseudonymised
  fi
  stop_portique
fi
if want deliver; then
  PD_PORT=$(free_port)
  log "portique (deliver, scanned, not rewritten): 127.0.0.1:$PD_PORT"
  start_portique deliver "$PD_PORT"
  profile_start deliver
  record "$(timed_run portique-deliver "$PORTIQUE_PORTS")"
  profile_stop deliver
  if [ "$VERIFY" = 1 ]; then
    log "verifying $VERIFY_MESSAGES generated messages through the deliver route (expect plain)"
    verify_through deliver "$PD_PORT" plain >"$WORK/verify-deliver.out" 2>&1 || STATUS=1
    cat "$WORK/verify-deliver.out" >&2
    latency_run deliver "$PD_PORT" plain
  fi
  stop_portique
fi

if want floor; then
  # A reference, never the bar: load-tests/python_floor.py (SMTP in, fsync'ed group
  # commit, SMTP out, nothing else) with as many processes as Portique's workers.
  FL_PORT=$(free_port)
  log "python floor (minimal relay, no gateway work): 127.0.0.1:$FL_PORT, processes=$WORKERS"
  mkdir -p "$WORK/floor"
  "$PY" "$HERE/python_floor.py" "$FL_PORT" "$SINK_PORT" "$WORK/floor" --processes "$WORKERS" \
    >"$WORK/floor.log" 2>&1 &
  FLOOR_PID=$!
  PIDS+=("$FLOOR_PID")
  wait_port "$FL_PORT" 20 || { log "python_floor.py did not listen on $FL_PORT"; cat "$WORK/floor.log" >&2; exit 1; }
  record "$(timed_run floor "$FL_PORT")"
  kill -TERM "$FLOOR_PID" 2>/dev/null || true
  wait "$FLOOR_PID" 2>/dev/null || true
fi

# --- table ----------------------------------------------------------------------------------
rate_of() { echo "${DELIVERED[$1]} / ${SECS[$1]}" | bc -l; }
echo
echo "Postfix vs Portique: $MESSAGES x $MSG_BYTES-byte lab orders, smtp-source -s $SESSIONS -> relay -> smtp-sink; nproc=$(nproc), Portique workers=$WORKERS"
printf '| %-66s | %9s | %9s | %10s | %s\n' "relay" "delivered" "seconds" "msg/s" "note"
printf '|%s|%s|%s|%s|%s\n' "--------------------------------------------------------------------" "-----------" "-----------" "------------" "------"
for name in postfix portique-pseudonymise portique-deliver floor; do
  [ -n "${SECS[$name]:-}" ] || continue
  label="$name"
  case "$name" in
    postfix) label="Postfix $(postconf -d -h mail_version 2>/dev/null) (plain relay)" ;;
    portique-pseudonymise) label="Portique, pseudonymising lab route" ;;
    portique-deliver) label="Portique, deliver route (scanned, not rewritten)" ;;
    floor) label="Python floor: minimal relay, fsync, no gateway work ($WORKERS proc.)" ;;
  esac
  if [ "$INSTANCES" != 1 ] && [ "$name" != postfix ] && [ "$name" != floor ]; then label="$label, $INSTANCES processes"; fi
  note=""
  [ "${DELIVERED[$name]}" = "$MESSAGES" ] || note="INCOMPLETE: ${DELIVERED[$name]} of $MESSAGES delivered, ${OTHER[$name]} other message(s) at the sink"
  printf '| %-66s | %9s | %9.2f | %10.1f | %s\n' "$label" "${DELIVERED[$name]}" "${SECS[$name]}" "$(rate_of "$name")" "$note"
done
if [ -n "${SECS[postfix]:-}" ] && [ -n "${SECS[portique-pseudonymise]:-}" ]; then
  valid=""
  [ "${DELIVERED[portique-pseudonymise]}" = "$MESSAGES" ] || valid="  (NOT VALID: the pseudonymising run did not deliver every message)"
  printf 'ratio Portique (pseudonymise) / Postfix = %.2f%s\n' \
    "$(echo "$(rate_of portique-pseudonymise) / $(rate_of postfix)" | bc -l)" "$valid"
fi
if [ -n "${SECS[postfix]:-}" ] && [ -n "${SECS[portique-deliver]:-}" ]; then
  printf 'ratio Portique (deliver, not rewritten) / Postfix = %.2f\n' \
    "$(echo "$(rate_of portique-deliver) / $(rate_of postfix)" | bc -l)"
fi
if [ -n "${SECS[postfix]:-}" ] && [ -n "${SECS[floor]:-}" ]; then
  printf 'ratio Python floor (reference, not a gateway) / Postfix = %.2f\n' \
    "$(echo "$(rate_of floor) / $(rate_of postfix)" | bc -l)"
fi
for row in pseudonymise deliver; do
  [ -f "$WORK/latency-$row.out" ] || continue
  echo "Portique $row, 2 KB at half the maximum sustained rate: $(grep -o 'offered_rate=[0-9.]*/s' "$WORK/latency-$row.out")" \
    "$(grep 'latency end of DATA -> sink' "$WORK/latency-$row.out")  $(grep -o 'RESULT: [A-Z]*' "$WORK/latency-$row.out")"
done
exit "$STATUS"
