#!/usr/bin/env bash
# Peak RSS of `portique serve` relaying one message with a large STL attachment through a
# pseudonymising route (issue 7, "the 100 MB-attachment case").
#
# Usage: load-tests/bench_big_stl.sh [SIZE_MB]   (default 137: a 100 MB binary STL, base64)
#
# Builds the message with load-tests/bench_pipeline_memory.py (patient name in the STL
# header and in the file name), starts a private `portique serve` (workers 1,
# smtp.max_message_size 200 MiB, the patient on the roster) relaying to Postfix's C
# smtp-sink, sends the message once, waits for it at the sink and prints the gateway's
# peak RSS (VmHWM), the time, and how many times the patient's name reached the sink (0
# expected). Exit 1 if the message did not arrive or carried the name.
# Needs /usr/sbin/smtp-sink (Debian postfix) and root or a `nobody` user for smtp-sink.
set -euo pipefail

SIZE_MB="${1:-137}"
# shellcheck source=load-tests/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
PORTIQUE="${PORTIQUE:-$REPO/.venv/bin/portique}"
start_work portique-big-stl

"$PY" -c "import sys; sys.path.insert(0, '$HERE'); import bench_pipeline_memory as b; \
from pathlib import Path; b.build(Path('$WORK/big.eml'), float('$SIZE_MB'))"
SINK_PORT=$(free_port)
PORT=$(free_port)
SMTP_TOML="max_message_size = 209715200" portique_config "$WORK/portique.toml" \
  "$WORK/data" "$PORT" "$SINK_PORT" pseudonymise labo.fr
printf 'nom;prenom;date_naissance\nDUPONT;Jean;02/11/1975\n' >"$WORK/roster.csv"
mkdir -p "$WORK/dump" && chmod 777 "$WORK/dump"
"$SMTP_SINK" -u nobody -d "$WORK/dump/%M." -M 1 "127.0.0.1:$SINK_PORT" 16 >"$WORK/sink.out" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
start_gateway "$WORK/portique.toml" "$WORK/roster.csv" "$PORT" "$PORTIQUE"

started=$(date +%s.%N)
"$PY" - "$WORK/big.eml" "$PORT" <<'EOF'
import smtplib
import sys

raw = open(sys.argv[1], "rb").read()
with smtplib.SMTP("127.0.0.1", int(sys.argv[2]), timeout=600) as client:
    refused = client.sendmail("cabinet@cabinet-martin.fr", ["orders@labo.fr"], raw)
sys.exit(1 if refused else 0)
EOF
deadline=$((SECONDS + 600))
while kill -0 "$SINK_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
finished=$(date +%s.%N)
peak_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$GATEWAY_PID/status")
arrived=$(find "$WORK/dump" -type f | head -n 1)
[ -n "$arrived" ] || { echo "the message did not arrive" >&2; exit 1; }
names=$(grep -c DUPONT "$arrived" || true)
echo "message $(stat -c %s "$WORK/big.eml") bytes (${SIZE_MB} MB), pseudonymising route, workers 1"
echo "delivered in $(printf '%.1f' "$(echo "$finished - $started" | bc -l)") s; patient name at the sink: $names"
echo "gateway peak RSS (VmHWM): $((peak_kb / 1024)) MiB ($peak_kb kB)"
[ "$names" = 0 ]
