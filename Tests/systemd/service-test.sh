#!/bin/bash
# The systemd path end to end: inside a private, throwaway systemd
# (Tests/systemd/sandbox.sh, or another tool with its interface in $SYSTEMD_SANDBOX)
# it runs `make install`, starts diffusiond.service, submits jobs into
# /var/spool/diffusiond/incoming (as root, and as a member of the diffusiond
# group with diffusionctl), waits until they are done, checks
# `diffusionctl status` (text and --json), the service user, the directory
# modes, that a second diffusiond refuses to start, the watchdog,
# `systemctl reload` and a clean `systemctl stop`; and it checks the unit
# with `systemd-analyze verify` and `systemd-analyze security --offline=true`
# (an exposure above MAX_EXPOSURE fails).
#
# Skips (exit 0) when not root, or without /lib/systemd/systemd or unshare.
# Build first (`make test-systemd` does): inside, `make install NO_BUILD=1`
# installs the binaries of the checkout's .build.
set -euo pipefail

# By default the service runs a tiny real job (2 images, DDIM, 10 steps) on the
# bundles that `make install` copies from models/. USE_TEST_GENERATOR=1 gives the
# installed unit a drop-in with Environment=DIFFUSIOND_TEST_GENERATOR=1 and a stub
# model.json instead (the daemon's deterministic test generator, no engine).
USE_TEST_GENERATOR=${USE_TEST_GENERATOR:-0}
MAX_EXPOSURE=${MAX_EXPOSURE:-2.5}

root=$(cd "$(dirname "$0")/../.." && pwd)

if [ "${1:-}" != --inside ]; then
  skip() { echo "test-systemd: SKIPPED: $*"; exit 0; }
  [ "$(id -u)" = 0 ] || skip "needs root (it boots a private systemd)"
  [ -x /lib/systemd/systemd ] || skip "/lib/systemd/systemd is missing"
  command -v unshare >/dev/null && command -v nsenter >/dev/null || skip "unshare/nsenter (util-linux) are missing"
  sandbox=${SYSTEMD_SANDBOX:-$root/Tests/systemd/sandbox.sh}
  [ -x "$sandbox" ] || { echo "test-systemd: FAILED: no sandbox tool at $sandbox (set SYSTEMD_SANDBOX)" >&2; exit 1; }
  cd "$root"
  timeout_s=600
  [ "$USE_TEST_GENERATOR" = 1 ] || timeout_s=1200
  echo "test-systemd: installing and running diffusiond.service in $sandbox"
  if USE_TEST_GENERATOR=$USE_TEST_GENERATOR MAX_EXPOSURE=$MAX_EXPOSURE \
     "$sandbox" --timeout "$timeout_s" -- "$root/Tests/systemd/service-test.sh" --inside; then
    echo "test-systemd: PASSED"
  else
    rc=$?
    echo "test-systemd: FAILED (status $rc)" >&2
    exit "$rc"
  fi
  exit 0
fi

# ---- inside the sandbox: root, a booted systemd, the checkout bound read-write ----
cd "$root"
unset MAKEFLAGS MFLAGS MAKELEVEL
step() { echo "== $*"; }
fail() {
  echo "FAIL: $*" >&2
  systemctl status diffusiond --no-pager -l 2>&1 | tail -n 15 >&2 || true
  journalctl -u diffusiond --no-pager -o short-monotonic 2>&1 | tail -n 40 >&2 || true
  exit 1
}
unit=/etc/systemd/system/diffusiond.service
spool=/var/spool/diffusiond
ctl=/usr/local/bin/diffusionctl

step "make install"
# The binaries were built before entering the sandbox (`make test-systemd`).
make install NO_BUILD=1 >/tmp/make-install.log 2>&1 || { tail -n 30 /tmp/make-install.log >&2; fail "make install"; }
for f in /usr/local/bin/diffusiond $ctl $unit /etc/diffusiond/config.yml; do
  [ -e "$f" ] || fail "make install did not install $f"
done
id diffusiond >/dev/null 2>&1 || fail "no diffusiond user"
[ "$(stat -c '%U:%G %a' $spool/incoming)" = "diffusiond:diffusiond 3770" ] || fail "incoming/ is $(stat -c '%U:%G %a' $spool/incoming)"
[ "$(stat -c '%U:%G %a' $spool)" = "diffusiond:diffusiond 750" ] || fail "the spool is $(stat -c '%U:%G %a' $spool)"
# A second install keeps the config.
echo "# local edit" >> /etc/diffusiond/config.yml
make install NO_BUILD=1 >/tmp/make-install.log 2>&1 || fail "second make install"
grep -q "# local edit" /etc/diffusiond/config.yml || fail "make install overwrote /etc/diffusiond/config.yml"

step "systemd-analyze verify"
verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
if grep -i diffusiond <<<"$verify"; then fail "systemd-analyze verify complains about the unit"; fi
step "systemd-analyze security --offline=true"
exposure=$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for diffusiond.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "no exposure level from systemd-analyze security"
echo "exposure $exposure (at most $MAX_EXPOSURE)"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' || fail "exposure $exposure > $MAX_EXPOSURE"

step "test drop-ins"
mkdir -p /etc/systemd/system/diffusiond.service.d
# A short watchdog, so that a missing WATCHDOG=1 shows within the test.
printf '[Service]\nWatchdogSec=4s\n' > /etc/systemd/system/diffusiond.service.d/50-test-watchdog.conf
if [ "$USE_TEST_GENERATOR" = 1 ]; then
  echo "using the deterministic test generator (USE_TEST_GENERATOR=1)"
  printf '[Service]\nEnvironment=DIFFUSIOND_TEST_GENERATOR=1\n' > /etc/systemd/system/diffusiond.service.d/50-test-generator.conf
  models=/usr/local/share/diffusiond/models
  if [ ! -f $models/fashion-mnist/model.json ]; then
    mkdir -p $models/fashion-mnist
    cat > $models/fashion-mnist/model.json <<'JSON'
{"format": "diffusiond-bundle/1", "name": "fashion-mnist", "kind": "unet",
 "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
 "null_class": 10, "data": {"height": 28, "width": 28, "channels": 1},
 "diffusion": {"steps": 1000, "variance": "learned_range"}}
JSON
  fi
  images=4 steps=10
else
  echo "using the diffusion engine (USE_TEST_GENERATOR=0)"
  [ -f /usr/local/share/diffusiond/models/fashion-mnist/model.json ] || fail "no fashion-mnist bundle in models/ to install"
  images=2 steps=10
fi
systemctl daemon-reload

step "systemctl start diffusiond"
systemctl start diffusiond || fail "systemctl start"
[ "$(systemctl is-active diffusiond)" = active ] || fail "not active after start"
pid=$(systemctl show -p MainPID --value diffusiond)
[ "$(ps -o user= -p "$pid" | tr -d ' ')" = diffusiond ] || fail "runs as $(ps -o user= -p "$pid")"
[ "$(ps -o group= -p "$pid" | tr -d ' ')" = diffusiond ] || fail "runs as group $(ps -o group= -p "$pid")"
[ "$(systemctl show -p StatusText --value diffusiond)" != "" ] || fail "no STATUS= from the daemon"

step "directories and the one-daemon lock"
[ "$(stat -c '%U:%G %a' /var/lib/diffusiond)" = "diffusiond:diffusiond 750" ] || fail "/var/lib/diffusiond is $(stat -c '%U:%G %a' /var/lib/diffusiond)"
[ "$(stat -c '%U %a' /var/lib/diffusiond/state)" = "diffusiond 700" ] || fail "state/ is $(stat -c '%U %a' /var/lib/diffusiond/state)"
[ "$(stat -c '%U %a' /var/lib/diffusiond/output)" = "diffusiond 750" ] || fail "output/ is $(stat -c '%U %a' /var/lib/diffusiond/output)"
db_mode=$(stat -c '%a' /var/lib/diffusiond/state/diffusiond.sqlite)
[ "$db_mode" = 640 ] || [ "$db_mode" = 600 ] || fail "the database is $db_mode"
# A second daemon on the same directories (here: by hand, as the service user) refuses to start.
set +e
second=$(timeout 60 runuser -u diffusiond -- /usr/local/bin/diffusiond --config /etc/diffusiond/config.yml 2>&1)
rc=$?
set -e
[ "$rc" = 75 ] || fail "a second diffusiond exited with $rc: $second"
grep -q "another diffusiond (pid $pid) is already running" <<<"$second" || fail "the second diffusiond said: $second"
[ "$(systemctl show -p MainPID --value diffusiond)" = "$pid" ] || fail "the service changed pid"

step "submit jobs"
job() {
  printf 'name: %s\nmodel: fashion-mnist\nclasses: [Trouser, Bag]\nimages: %s\nsampler: {kind: ddim, steps: %s}\nseed: 7\noutput: {format: png, upscale: 2}\n' "$1" "$images" "$steps"
}
# As root, the way a careful writer drops a file: a dot-name, then a rename.
job systemd-root > $spool/incoming/.systemd-root.yml.part
mv $spool/incoming/.systemd-root.yml.part $spool/incoming/systemd-root.yml
# As a member of the diffusiond group, with diffusionctl (and the default config path).
useradd --no-create-home --groups diffusiond submitter
job systemd-group > /tmp/systemd-group.yml
chmod 0644 /tmp/systemd-group.yml
runuser -u submitter -- $ctl submit /tmp/systemd-group.yml || fail "a diffusiond group member cannot submit"

step "wait for the jobs"
deadline=$((SECONDS + (USE_TEST_GENERATOR == 1 ? 120 : 900)))
while :; do
  states=$($ctl jobs --json | jq -r '[.[] | select(.name | startswith("systemd-")) | .state] | sort | join(",")')
  [ "$states" = "done,done" ] && break
  case "$states" in *failed*|*canceled*) $ctl jobs; fail "a job did not finish: $states" ;; esac
  [ "$SECONDS" -lt "$deadline" ] || { $ctl jobs; fail "jobs not done in time: $states"; }
  [ "$(systemctl is-active diffusiond)" = active ] || fail "the daemon died"
  sleep 1
done

step "diffusionctl status"
$ctl status | tee /tmp/status.txt
grep -q systemd-root /tmp/status.txt && grep -q systemd-group /tmp/status.txt || fail "status does not list the jobs"
$ctl status --json > /tmp/status.json
jq -e '.daemon.alive == true' /tmp/status.json >/dev/null || fail "status --json: daemon not alive"
jq -e '[.recent[] | select(.name == "systemd-root" and .state == "done")] | length == 1' /tmp/status.json >/dev/null \
  || fail "status --json does not report systemd-root as done"
id=$($ctl jobs --json | jq -r '.[] | select(.name == "systemd-root") | .id')
out=$($ctl show "$id" --json | jq -r .job.output_dir)
[ -f "$out/contact-sheet.png" ] || fail "no contact sheet in $out"
[ "$(stat -c '%U %a' "$out/contact-sheet.png")" = "diffusiond 640" ] || fail "output file is $(stat -c '%U %a' "$out/contact-sheet.png")"
[ "$(find "$out" -maxdepth 1 -name 'systemd-root-*.png' | wc -l)" = "$images" ] || fail "expected $images images in $out"
[ -f $spool/done/systemd-root.yml ] && [ -f $spool/done/systemd-group.yml ] || fail "the job files are not in done/: $(ls $spool/done)"
left=$(ls -A $spool/incoming $spool/active | grep -v -e "^$spool" -e "^$" || true)
[ -z "$left" ] || fail "files left in incoming/ or active/: $left"

step "watchdog"
t0=$(systemctl show -p WatchdogTimestampMonotonic --value diffusiond)
sleep 5
t1=$(systemctl show -p WatchdogTimestampMonotonic --value diffusiond)
[ "$t1" -gt "$t0" ] || fail "no WATCHDOG=1 within 5 s (WatchdogSec=4s)"
[ "$(systemctl show -p NRestarts --value diffusiond)" = 0 ] || fail "the service restarted"

step "systemctl reload diffusiond"
systemctl reload diffusiond || fail "systemctl reload"
sleep 1
[ "$(systemctl is-active diffusiond)" = active ] || fail "not active after reload"
[ "$(systemctl show -p MainPID --value diffusiond)" = "$pid" ] || fail "reload restarted the process"
journalctl -u diffusiond --no-pager | grep -q "config reloaded" || fail "no 'config reloaded' in the journal"

step "systemctl stop diffusiond"
systemctl stop diffusiond || fail "systemctl stop"
[ "$(systemctl show -p ExecMainStatus --value diffusiond)" = 0 ] || fail "ExecMainStatus $(systemctl show -p ExecMainStatus --value diffusiond)"
[ "$(systemctl show -p Result --value diffusiond)" = success ] || fail "Result $(systemctl show -p Result --value diffusiond)"
if systemctl is-failed --quiet diffusiond; then fail "the unit is failed"; fi
[ "$(systemctl is-active diffusiond)" = inactive ] || fail "not inactive after stop"
# journald may take a moment to store the daemon's last line after the unit stopped.
clean=0
for _ in $(seq 1 50); do
  journalctl -u diffusiond --no-pager | grep -q "diffusiond stopped" && { clean=1; break; }
  sleep 0.1
done
[ "$clean" = 1 ] || fail "no clean shutdown in the journal"
echo "all systemd checks passed (exposure $exposure)"
