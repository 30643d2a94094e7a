#!/bin/bash
# Fuzzes the job-file parser and validator (Sources/diffusiond-fuzz) with libFuzzer
# and AddressSanitizer, starting from the committed seed corpus (Tests/Fuzz/corpus)
# and dictionary (Tests/Fuzz/job.dict), and writes a summary.
#
#   scripts/fuzz.sh [SECONDS] [REPORT]      # defaults: 600, docs/reliability/fuzz.txt
#
# The fuzzer is built into .build-fuzz (swift build --sanitize fuzzer --sanitize
# address -Xswiftc -DFUZZING; the first build takes several minutes). swiftc keeps
# only the last -sanitize= it is given, so -Xswiftc -sanitize=fuzzer,address puts
# both back for the Swift modules (without it they get AddressSanitizer but no
# coverage, and the fuzzer is blind to the code it fuzzes). The corpus
# it grows is kept in .build-fuzz/corpus between runs (the committed seeds are
# never modified); a crash, sanitizer report, timeout or broken invariant is saved
# in .build-fuzz/artifacts/ and fails the run. One core: -workers is not used.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
report=${2:-docs/reliability/fuzz.txt}
swift=${SWIFT:-swift}
scratch=.build-fuzz

echo "fuzz: building the fuzzer (swift build --sanitize fuzzer --sanitize address)"
"$swift" build -c release --scratch-path "$scratch" --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
  --product diffusiond-fuzz
fuzzer=$("$swift" build -c release --scratch-path "$scratch" --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
  --show-bin-path)/diffusiond-fuzz
mkdir -p "$scratch/corpus" "$scratch/artifacts"
log=$scratch/fuzz-latest.log
seeds=$(find Tests/Fuzz/corpus -type f | wc -l)
echo "fuzz: $seeds seed files; running $seconds s (log: $log)"
start=$(date -u '+%Y-%m-%d %H:%M')
touch "$scratch/.fuzz-start"
set +e
"$fuzzer" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=4096 \
  -dict=Tests/Fuzz/job.dict -artifact_prefix="$scratch/artifacts/" -print_final_stats=1 \
  "$scratch/corpus" Tests/Fuzz/corpus >"$log" 2>&1
rc=$?
set -e
stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
execs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
rss=$(stat peak_rss_mb)
final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")
corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$final")
crashes=$(find "$scratch/artifacts" -type f -newer "$scratch/.fuzz-start" 2>/dev/null | wc -l)
findings=$(grep -cE '^==[0-9]+==ERROR|Fatal error|deadly signal|ERROR: libFuzzer' "$log" || true)
result=PASSED
[ "$rc" = 0 ] && [ "$findings" = 0 ] && [ "$crashes" = 0 ] || result=FAILED
mkdir -p "$(dirname "$report")"
cat >"$report" <<EOF
diffusiond fuzzing: the job-file parser and validator (Sources/diffusiond-fuzz; scripts/fuzz.sh $seconds)
date: $start UTC; host: $(uname -n); libFuzzer + AddressSanitizer, one process, -max_len=8192
target: StrictYAML.load + JobValidator.validate (a catalog of a conditional UNet with a null class, its
  classifier and an unconditional UNet), checked for: no crash or sanitizer report, no hang (10 s),
  accepted jobs with safe names, counts and steps within the limits, finite numbers and a lossless JSON
  round trip; rejections with messages; the same result twice; DaemonConfig.parse on the same bytes
seeds: $seeds files (Tests/Fuzz/corpus: the examples, valid jobs, the bad-job corpus under 8 KiB) + dictionary Tests/Fuzz/job.dict
time: $seconds s; executions: $execs ($rate/s); coverage: $cov edges, $ft features; corpus: $corp; peak RSS: $rss MB
crashes, sanitizer reports, timeouts, broken invariants: $findings (artifacts: $crashes)
RESULT: $result
EOF
cat "$report"
[ "$result" = PASSED ] || { echo "fuzz: findings; see $log and $scratch/artifacts/" >&2; tail -n 40 "$log" >&2; exit 1; }
