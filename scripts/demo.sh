#!/bin/bash
# `make demo`: starts diffusiond in the background on the checkout's config.yml,
# submits a job (spool/examples/demo.yml unless DEMO_JOB says otherwise) with
# diffusionctl, waits until it has finished, shows `diffusionctl status`, the
# output folder and the contact sheet, and stops the daemon with SIGTERM (also
# when the job fails or the demo is interrupted).
#
#   BIN=<folder with diffusiond and diffusionctl> scripts/demo.sh
#
# DEMO_JOB (a job file), DEMO_TIMEOUT (seconds, default 3600).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${BIN:?BIN must name the folder holding diffusiond and diffusionctl}
config=$root/config.yml
job=${DEMO_JOB:-spool/examples/demo.yml}
timeout_s=${DEMO_TIMEOUT:-3600}
command -v jq >/dev/null || { echo "demo: needs jq (apt-get install jq)" >&2; exit 1; }

ctl() { local sub=$1; shift; "$bin/diffusionctl" "$sub" --config "$config" "$@"; }

# Fail early, with the validator's message, when the job cannot run here
# (most often: the model bundle is not in models/).
spec=$(ctl validate --json "$job") || { echo "demo: $job is not valid with $config" >&2; exit 1; }
name=$(jq -r .name <<<"$spec")

mkdir -p "$root/state"
log=$root/state/demo-daemon.log
# OpenBLAS chooses its own kernels (an exported OPENBLAS_CORETYPE can halve the speed).
env -u OPENBLAS_CORETYPE OMP_WAIT_POLICY=passive "$bin/diffusiond" --config "$config" >"$log" 2>&1 &
pid=$!
stop() {
  if kill -0 "$pid" 2>/dev/null; then
    echo "demo: stopping diffusiond (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM HUP

daemon_gone() {
  kill -0 "$pid" 2>/dev/null && return 1
  wait "$pid" 2>/dev/null && rc=0 || rc=$?
  echo "demo: diffusiond exited (status $rc); its log ($log):" >&2
  tail -n 20 "$log" >&2
  return 0
}

echo "demo: diffusiond started (pid $pid, log $log)"
for _ in $(seq 1 600); do
  daemon_gone && exit 1
  [ "$(ctl status --json 2>/dev/null | jq -r .daemon.alive)" = true ] && break
  sleep 0.1
done
[ "$(ctl status --json | jq -r .daemon.alive)" = true ] || { echo "demo: diffusiond did not become ready" >&2; exit 1; }

before=$(ctl jobs --json --limit 1 | jq '[.[].id] | max // 0')
ctl submit "$job"

deadline=$((SECONDS + timeout_s))
id="" state="" shown=""
while :; do
  daemon_gone && exit 1
  row=$(ctl jobs --json --limit 20 | jq -c --arg n "$name" --argjson b "$before" \
        '[.[] | select(.id > $b and .name == $n)] | min_by(.id) // empty')
  if [ -n "$row" ]; then
    id=$(jq -r .id <<<"$row"); state=$(jq -r .state <<<"$row"); total=$(jq -r .images <<<"$row")
    progress="job $id $state: $(jq -r '.images_done' <<<"$row")/$(jq -r .images <<<"$row") images"
    [ "$progress" != "$shown" ] && { echo "demo: $progress"; shown=$progress; }
    case "$state" in done|failed|canceled) break ;; esac
  fi
  [ "$SECONDS" -lt "$deadline" ] || { echo "demo: job not finished after ${timeout_s}s" >&2; exit 1; }
  sleep 1
done

echo
ctl status
echo
if [ "$state" != done ]; then
  echo "demo: job $id $state:" >&2
  ctl show "$id" | tail -n 20 >&2
  exit 1
fi
out=$(ctl show "$id" --json | jq -r '.job.output_dir // empty')
[ -n "$out" ] || out=$(dirname "$(ctl show "$id" --json | jq -r '.images[0].path')")
echo "demo: $total images of job $id in $out"
echo "demo: contact sheet $out/contact-sheet.png"
[ -f "$out/contact-sheet.png" ] || { echo "demo: the contact sheet is missing" >&2; exit 1; }
