#!/usr/bin/env bash
# The ratio Portique / Postfix over several rounds, for a VM whose speed drifts.
#
# Usage: load-tests/compare_rounds.sh [-r ROUNDS] [COMPARE_POSTFIX_OPTIONS...]
#
# Runs `compare_postfix.sh --rows postfix,pseudonymise --no-verify OPTIONS` ROUNDS times
# (default 5), each round Postfix's row then Portique's, and prints every round's two
# rates and ratio, then the ratios' minimum, median and maximum and how many rounds reach
# 1.0. One run of compare_postfix.sh compares two rows timed one after the other: on a
# machine whose speed moves by a quarter within a minute, the spread over rounds says
# more than one ratio. Exits non-zero if a round fails (a message missing, a row
# incomplete).
set -euo pipefail
ROUNDS=5
if [ "${1:-}" = "-r" ]; then ROUNDS="$2"; shift 2; fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG="$(mktemp "${TMPDIR:-/tmp}/compare-rounds.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
ratios=()
for round in $(seq 1 "$ROUNDS"); do
  if ! out=$("$HERE/compare_postfix.sh" --rows postfix,pseudonymise --no-verify "$@" 2>"$LOG"); then
    echo "round $round: compare_postfix.sh failed" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  postfix=$(awk -F'|' '/^\| Postfix/ {gsub(/ /, "", $5); print $5}' <<<"$out")
  portique=$(awk -F'|' '/^\| Portique, pseudonymising/ {gsub(/ /, "", $5); print $5}' <<<"$out")
  ratio=$(awk '/^ratio Portique \(pseudonymise\)/ {print $NF}' <<<"$out")
  [ -n "$ratio" ] || { echo "round $round: no ratio (compare_postfix.sh failed)" >&2; exit 1; }
  echo "round $round: Postfix $postfix msg/s, Portique $portique msg/s, ratio $ratio"
  ratios+=("$ratio")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk -v n="$ROUNDS" '
  { r[NR] = $1; if ($1 >= 1.0) reached++ }
  END {
    median = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
    printf "ratio over %d rounds: min %.2f, median %.2f, max %.2f; %d of %d at 1.0 or more\n",
      n, r[1], median, r[n], reached, n
  }'
