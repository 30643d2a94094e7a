#!/usr/bin/env python3
"""Load test: N small jobs dropped into the spool at once.

    scripts/load-test.py --bin .build/release [--jobs 2000] [--generator engine|test]
                         [--images 1] [--steps 1] [--report docs/reliability/load-engine.txt]

The job files are written beforehand into a folder beside the spool and
renamed into spool/incoming in one burst (as many as a busy submitter could
drop at once). While the daemon works through them, every --interval seconds
the script samples the daemon's VmRSS and VmHWM (/proc/PID/status) and runs
`diffusionctl status --json`, timing it from fork to exit. At the end: every
job must be done with its images, the daemon alive, every status call
answered (exit 0, valid JSON) within --max-status-ms, no temporary files left.
The figures go to --report; the exit status is 0 only when every check passed.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reliability_common import Daemon, finish_report, percentile, temporaries, vm_status, wait_for  # noqa: E402

STUB_MODEL = """{"format": "diffusiond-bundle/1", "name": "fashion-mnist", "kind": "unet",
 "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
 "null_class": 10, "data": {"height": 28, "width": 28, "channels": 1},
 "diffusion": {"steps": 1000, "variance": "learned_range"}}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--generator", choices=["engine", "test"], default="engine")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--nice", type=int, default=10, help="the daemon's nice value (the unit's Nice=; 0 for none)")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--idle-seconds", type=float, default=15, help="status samples with the daemon idle first (a control)")
    ap.add_argument("--max-status-ms", type=float, default=200)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--work", default=None)
    ap.add_argument("--report", default=None)
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin)
    work = args.work or "/var/tmp/diffusiond-load-%d" % os.getpid()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    if args.generator == "engine":
        models = os.path.abspath(args.models)
        preload = "[fashion-mnist]"
    else:
        models = os.path.join(work, "models")
        os.makedirs(os.path.join(models, "fashion-mnist"))
        with open(os.path.join(models, "fashion-mnist", "model.json"), "w") as f:
            f.write(STUB_MODEL)
        preload = "[]"
    d = Daemon(bin_dir, work, """spool: spool
output: out
state: state
models: %s
default_model: fashion-mnist
preload: %s
batch_size: 64
threads: 2
log_level: info
generator: %s
""" % (models, preload, args.generator), nice=args.nice)

    staging = os.path.join(work, "staging")
    os.makedirs(staging)
    for i in range(args.jobs):
        with open(os.path.join(staging, "load-%05d.yml" % i), "w") as f:
            f.write("name: load-%05d\nclasses: [%d]\nimages: %d\nsampler: {kind: ddim, steps: %d}\nseed: %d\n"
                    % (i, i % 10, args.images, args.steps, i))

    load_at_start = os.getloadavg()[0]
    started_utc = datetime.datetime.utcnow()
    run(args, d, work, load_at_start, started_utc)


def run(args, d, work, load_at_start, started_utc):
    bin_dir = os.path.abspath(args.bin)
    staging = os.path.join(work, "staging")
    d.start()
    d.wait_ready()
    pid = d.proc.pid
    time.sleep(1)
    baseline = vm_status(pid)

    samples = []  # (t, rss_kib, hwm_kib, status_ms, ok, queue_len)
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler():
        while not stop.is_set():
            t = time.monotonic() - t0
            vm = vm_status(pid)
            s = time.monotonic()
            p = subprocess.run([os.path.join(bin_dir, "diffusionctl"), "status", "--json", "--config", d.config],
                               capture_output=True, text=True)
            ms = (time.monotonic() - s) * 1000
            ok, queue = p.returncode == 0, None
            try:
                report = json.loads(p.stdout)
                queue = report.get("queue_length", len(report.get("queue", [])))
            except ValueError:
                ok = False
            samples.append((t, vm.get("VmRSS", 0), vm.get("VmHWM", 0), ms, ok, queue, os.getloadavg()[0]))
            stop.wait(args.interval)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    # A control: status while the daemon is idle, under whatever else loads the machine.
    time.sleep(args.idle_seconds)
    idle_count = len(samples)
    burst = time.monotonic()
    incoming = os.path.join(work, "spool", "incoming")
    for name in sorted(os.listdir(staging)):
        os.rename(os.path.join(staging, name), os.path.join(incoming, name))
    burst_s = time.monotonic() - burst

    def counts():
        with d.db() as c:
            return dict(c.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    wait_for("every job queued", lambda: sum(counts().values()) >= args.jobs, args.timeout, 0.25)
    queued_s = time.monotonic() - burst
    wait_for("every job finished", lambda: counts().get("done", 0) + counts().get("failed", 0) >= args.jobs, args.timeout, 0.5)
    done_s = time.monotonic() - burst
    time.sleep(2)
    stop.set()
    th.join()
    alive = d.alive()
    end_vm = vm_status(pid)
    rc = d.stop()

    failures = []
    c = counts()
    if c.get("done", 0) != args.jobs:
        failures.append("jobs by state: %s" % c)
    with d.db() as conn:
        images = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if images != args.jobs * args.images:
        failures.append("%d images recorded, %d expected" % (images, args.jobs * args.images))
    if integrity != "ok":
        failures.append("integrity_check: %s" % integrity)
    if not alive:
        failures.append("the daemon died")
    if rc != 0:
        failures.append("SIGTERM: exit status %s" % rc)
    left = [f for sub in ["incoming", "active", "failed"] for f in os.listdir(os.path.join(work, "spool", sub))]
    if left:
        failures.append("left in incoming/active/failed: %d entries" % len(left))
    temps = temporaries(os.path.join(work, "out"), os.path.join(work, "spool"))
    if temps:
        failures.append("temporary files left: %s" % temps[:5])
    idle, loaded = samples[:idle_count], samples[idle_count:]
    lat = [s[3] for s in loaded]
    idle_lat = [s[3] for s in idle]
    bad = [s for s in samples if not s[4]]
    slow = [s for s in loaded if s[3] > args.max_status_ms]
    if bad:
        failures.append("%d status calls failed" % len(bad))
    if slow:
        failures.append("%d of %d status calls took more than %.0f ms (max %.0f ms)" % (len(slow), len(loaded), args.max_status_ms, max(lat)))
    rss = [s[1] for s in samples if s[1]]
    hwm = max([s[2] for s in samples if s[2]] + [end_vm.get("VmHWM", 0)])
    mib = lambda kib: kib / 1024.0  # noqa: E731

    lines = []
    lines.append("diffusiond load test (scripts/load-test.py --jobs %d --generator %s --images %d --steps %d)"
                 % (args.jobs, args.generator, args.images, args.steps))
    lines.append("date: %s UTC; host: %s; %d CPUs (load average %.1f at the start); batch_size 64, threads 2, daemon at nice %d"
                 % (started_utc.strftime("%Y-%m-%d %H:%M"), os.uname().nodename, os.cpu_count(),
                    load_at_start, args.nice))
    what = ("the diffusion engine, fashion-mnist, DDIM" if args.generator == "engine" else "the deterministic test generator (no model)")
    lines.append("jobs: %d files renamed into spool/incoming in %.2f s; each %d image(s), %d step(s), %s"
                 % (args.jobs, burst_s, args.images, args.steps, what))
    lines.append("all queued (claimed, validated, recorded) after %.1f s; all done after %.1f s (%.1f jobs/s)"
                 % (queued_s, done_s, args.jobs / done_s))
    lines.append("daemon memory: VmRSS %.1f MiB when ready and idle, max %.1f MiB while loaded, %.1f MiB at the end; VmHWM (peak) %.1f MiB"
                 % (mib(baseline.get("VmRSS", 0)), mib(max(rss or [0])), mib(end_vm.get("VmRSS", 0)), mib(hwm)))
    lines.append("diffusionctl status --json (fork to exit), every %.2f s while the jobs drain: %d calls, p50 %.0f ms, p95 %.0f ms, "
                 "p99 %.0f ms, max %.0f ms; over %.0f ms: %d; failed: %d" % (
                     args.interval, len(lat), percentile(lat, 50), percentile(lat, 95), percentile(lat, 99), max(lat or [0]),
                     args.max_status_ms, len(slow), len(bad)))
    lines.append("  control, the same with the daemon idle (%.0f s before the drop): %d calls, p50 %.0f ms, p95 %.0f ms, max %.0f ms"
                 % (args.idle_seconds, len(idle_lat), percentile(idle_lat, 50), percentile(idle_lat, 95), max(idle_lat or [0])))
    loads = [s[6] for s in loaded]
    lines.append("machine load average (1 min) while the jobs drain: mean %.1f, max %.1f (the daemon's own share is about 2); "
                 "at the start %.1f" % (sum(loads) / max(len(loads), 1), max(loads or [0]), load_at_start))
    lines.append("images recorded: %d; PRAGMA integrity_check: %s" % (images, integrity))
    lines.append("")
    lines.append("RESULT: %s" % ("PASSED" if not failures else "FAILED"))
    for f in failures:
        lines.append("  " + f)
    lines.append("")
    lines.append("samples (every 20th): t(s)  VmRSS(MiB)  status(ms)  queue  load average")
    for s in samples[::20]:
        lines.append("  %7.1f  %8.1f  %8.0f  %5s  %5.1f" % (s[0], mib(s[1]), s[3], s[5], s[6]))
    finish_report(lines, args.report, work, args.work, failures)
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()
