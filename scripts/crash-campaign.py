#!/usr/bin/env python3
"""Crash campaign: SIGKILL diffusiond again and again while it works through
20 real-engine jobs, restart it each time, then check that nothing was lost,
duplicated, corrupted or left behind.

    scripts/crash-campaign.py --bin .build/release [--jobs 20] [--kills 30] [--seed 1]
                              [--work DIR] [--report docs/reliability/crash-campaign.txt]

1. A reference run: the same jobs on a fresh root, never interrupted.
2. The campaign: a fresh root; the jobs arrive in four waves; the daemon is
   killed with SIGKILL at least --kills times, each kill aimed at one phase in
   turn and then classified from what the kill left behind:
     model load   the preload of fashion-mnist had begun and not ended (the daemon was not ready)
     sampling     a job active, its last batch neither written nor recorded
     image write  a hidden temporary image file open in the output folder
     db commit    an image renamed into place whose database row was not written
     after images every image recorded, the job not yet done (contact sheet, metrics)
     ingest       a job file claimed into spool/active without its row
   It goes on (up to 3 x --kills) until every one of the first five phases was hit.
3. Checks: every job done exactly once (one row, its file once in done/, nothing
   in incoming/, active/, failed/), exactly its images (rows 0..n-1, exactly
   those files and viewing copies), every file's SHA-256 equal to its row,
   every image's pixels identical to the reference run, no temporary files,
   PRAGMA integrity_check = ok and no foreign key violations.
The report (figures and any failure) goes to --report; the exit status is 0
only when every check passed.
"""

import argparse
import datetime
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reliability_common import Daemon, finish_report, pixel_digest, sha256_file, temporaries, wait_for  # noqa: E402

PHASES = ["model load", "sampling", "image write", "db commit", "after images"]
TARGETS = ["model load", "sampling", "image write", "db commit", "after images", "ingest", "random"]


def make_jobs(n, rng):
    """n small real-engine jobs: 4-70 images, 10-20 steps, mixed samplers, modes and formats."""
    jobs = []
    for i in range(n):
        images = rng.randint(4, 70)
        steps = rng.randint(10, 20)
        kind = rng.choice(["ddim", "ddpm", "analytic-ddim", "analytic-ddpm"])
        mode = rng.choice(["class-conditional", "class-conditional", "classifier-free"])
        classes = rng.sample(range(10), rng.randint(1, 4))
        sampler = "{kind: %s, steps: %d%s%s}" % (
            kind, steps,
            ", eta: 0.5" if kind == "ddim" and i % 3 == 0 else "",
            ", guidance_scale: 1.5" if mode == "classifier-free" else "")
        output = "{format: jpeg, quality: 90, upscale: 2}" if i % 5 == 4 else (
            "{format: png, upscale: 2}" if i % 4 == 1 else "png")
        name = "c%02d" % i
        jobs.append((name, "name: %s\nmode: %s\nclasses: %s\nimages: %d\nsampler: %s\nseed: %d\noutput: %s\n" % (
            name, mode, classes, images, sampler, rng.randrange(1 << 32), output)))
    return jobs


def config(models):
    return """spool: spool
output: out
state: state
models: %s
default_model: fashion-mnist
preload: [fashion-mnist]
batch_size: 64
threads: 2
rescan_seconds: 1
log_level: info
generator: engine
limits:
  # Every kill counts as an attempt; the campaign kills far more often than a poison job would.
  attempts: 100
""" % models


def job_rows(d):
    with d.db() as c:
        return c.execute("SELECT id, name, state, total_images, attempts, output_dir, spool_name FROM jobs ORDER BY id").fetchall()


def active_job(d):
    """(id, name, total, recorded, output_dir) of the active job, or None."""
    try:
        with d.db() as c:
            row = c.execute("SELECT id, name, total_images, output_dir FROM jobs WHERE state = 'active'").fetchone()
            if row is None:
                return None
            n = c.execute("SELECT COUNT(*) FROM images WHERE job_id = ?", (row[0],)).fetchone()[0]
            return (row[0], row[1], row[2], n, row[3])
    except Exception:
        return None


def recorded_names(d, job_id):
    with d.db() as c:
        return {os.path.basename(p) for (p,) in c.execute("SELECT path FROM images WHERE job_id = ?", (job_id,))}


def visible_images(out_dir, name):
    try:
        return {f for f in os.listdir(out_dir) if f.startswith(name + "-") and not f.startswith(".")}
    except OSError:
        return set()


def classify(d, root):
    """What the daemon was doing when it died, from what it left behind."""
    if not d.is_ready():
        log = d.log_since_start()
        return "model load" if "loading model" in log and "model loaded" not in log else "startup"
    a = active_job(d)
    if a is not None:
        job_id, name, total, recorded, out_dir = a
        temps = [os.path.basename(t) for t in temporaries(out_dir or "")]
        if any(t.startswith("." + name + "-") for t in temps):
            return "image write"
        if temps:  # the contact sheet
            return "after images"
        if out_dir and visible_images(out_dir, name) - recorded_names(d, job_id):
            return "db commit"
        if recorded == total:
            return "after images"
        return "sampling"
    with d.db() as c:
        known = {s for (s,) in c.execute("SELECT spool_name FROM jobs")}
    active_dir = os.path.join(root, "spool", "active")
    if any(f not in known for f in os.listdir(active_dir) if not f.startswith(".")):
        return "ingest"
    return "idle"


def aim(d, target, rng, root, remaining_waves):
    """Waits for the moment `target` names (or a random one), then SIGKILLs the daemon.
    Returns False when there was nothing to aim at (the queue ran dry)."""
    if target == "model load":
        # Restarted just before: wait for the preload to begin, kill within it.
        wait_for("the model load to begin", lambda: "loading model" in d.log_since_start(), 60, 0.0005)
        time.sleep(rng.uniform(0.0, 0.9 * d.load_seconds))
        d.kill()
        return True
    d.wait_ready()
    if target == "ingest":
        if not remaining_waves:
            return False
        for name, text in remaining_waves.pop(0):
            d.drop(name + ".yml", text)
        time.sleep(rng.uniform(0.0, 0.4))
        d.kill()
        return True
    if target == "random":
        time.sleep(rng.uniform(0.0, 6.0))
        d.kill()
        return True

    deadline = time.monotonic() + 120
    a = None
    while time.monotonic() < deadline:
        a = active_job(d)
        if a is not None:
            break
        if not has_work(d):
            return False
        time.sleep(0.01)
    if a is None:
        return False
    job_id, name, total, recorded, out_dir = a
    if target == "sampling":
        time.sleep(rng.uniform(0.1, 1.5))
        d.kill()
        return True
    # The rest happen once the batch's images start landing: poll fast.
    while time.monotonic() < deadline:
        a = active_job(d)
        if a is None or a[0] != job_id:
            # That job ended between polls; aim at the next one.
            return aim(d, target, rng, root, remaining_waves)
        recorded = a[3]
        if target == "after images" and recorded == total:
            d.kill()
            return True
        if target == "image write" and recorded > 0 and temporaries(out_dir or ""):
            d.kill()
            return True
        if target == "db commit" and out_dir and visible_images(out_dir, name) - recorded_names(d, job_id):
            d.kill()
            return True
        time.sleep(0.0005)
    d.kill()
    return True


def next_target(n, hit, waves):
    """The phase kill n aims at: one not hit yet every other kill, else round-robin;
    never the model load first (the first start has finished loading)."""
    missing = [p for p in PHASES if p not in hit]
    target = missing[0] if missing and n % 2 == 0 else TARGETS[n % len(TARGETS)]
    if n == 0 and target == "model load":
        target = "sampling"
    if target == "ingest" and not waves:
        target = "random"
    return target


def has_work(d):
    try:
        with d.db() as c:
            return c.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'active')").fetchone()[0] > 0
    except Exception:
        return True


def run_reference(bin_dir, root, models, jobs, timeout):
    d = Daemon(bin_dir, root, config(models))
    d.start()
    d.wait_ready()
    # The preload's own figure: "model loaded ... seconds=0.05..."
    load_seconds = float(d.log_since_start().split("seconds=", 1)[1].split()[0])
    t0 = time.monotonic()
    for name, text in jobs:
        d.drop(name + ".yml", text)
    wait_for("the reference jobs", lambda: all(os.path.exists(os.path.join(root, "spool", "done", n + ".yml")) for n, _ in jobs),
             timeout, 0.5)
    wall = time.monotonic() - t0
    d.stop()
    digests = {}
    with d.db() as c:
        for name, idx, path in c.execute("SELECT j.name, i.idx, i.path FROM images i JOIN jobs j ON j.id = i.job_id"):
            digests[(name, idx)] = pixel_digest(path)
    return digests, load_seconds, wall


def check(d, root, jobs, reference):
    failures = []
    rows = job_rows(d)
    by_name = {}
    for r in rows:
        by_name.setdefault(r[1], []).append(r)
    expected_total = {}
    for name, text in jobs:
        expected_total[name] = int(text.split("images: ")[1].split("\n")[0])
        got = by_name.get(name, [])
        if len(got) != 1:
            failures.append("%s: %d job rows" % (name, len(got)))
        elif got[0][2] != "done":
            failures.append("%s: state %s" % (name, got[0][2]))
    if len(rows) != len(jobs):
        failures.append("%d job rows for %d jobs" % (len(rows), len(jobs)))
    spool = os.path.join(root, "spool")
    done = sorted(os.listdir(os.path.join(spool, "done")))
    if done != sorted(n + ".yml" for n, _ in jobs):
        failures.append("spool/done holds %s" % done)
    for sub in ["incoming", "active", "failed"]:
        left = [f for f in os.listdir(os.path.join(spool, sub))]
        if left:
            failures.append("spool/%s is not empty: %s" % (sub, left))

    images_checked = 0
    with d.db() as c:
        for job_id, name, state, total, attempts, out_dir, _ in rows:
            if total != expected_total.get(name):
                failures.append("%s: total_images %s, the job asks for %s" % (name, total, expected_total.get(name)))
            imgs = c.execute("SELECT idx, path, sha256, byte_size FROM images WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
            if [i[0] for i in imgs] != list(range(total)):
                failures.append("%s: image rows %s" % (name, [i[0] for i in imgs]))
            ext = os.path.splitext(imgs[0][1])[1] if imgs else ".png"
            want = {"%s-%05d%s" % (name, i, ext) for i in range(total)}
            have = {f for f in os.listdir(out_dir) if not os.path.isdir(os.path.join(out_dir, f))}
            if have - {"contact-sheet.png"} != want:
                failures.append("%s: output files differ: extra %s, missing %s" % (
                    name, sorted(have - want - {"contact-sheet.png"}), sorted(want - have)))
            if "contact-sheet.png" not in have:
                failures.append("%s: no contact sheet" % name)
            view = os.path.join(out_dir, "view")
            if os.path.isdir(view) and set(os.listdir(view)) != want:
                failures.append("%s: view/ differs: %s" % (name, sorted(set(os.listdir(view)) ^ want)))
            for idx, path, sha, size in imgs:
                if sha256_file(path) != sha or os.path.getsize(path) != size:
                    failures.append("%s: image %d: SHA-256 or size differs from its row" % (name, idx))
                if pixel_digest(path) != reference.get((name, idx)):
                    failures.append("%s: image %d differs from the uninterrupted run" % (name, idx))
                images_checked += 1
        integrity = c.execute("PRAGMA integrity_check").fetchall()
        fk = c.execute("PRAGMA foreign_key_check").fetchall()
        duplicate_metrics = c.execute(
            "SELECT COUNT(*) FROM (SELECT job_id, name FROM metrics GROUP BY job_id, name HAVING COUNT(*) > 1)").fetchone()[0]
    if integrity != [("ok",)]:
        failures.append("PRAGMA integrity_check: %s" % integrity)
    if fk:
        failures.append("PRAGMA foreign_key_check: %s" % fk[:5])
    temps = temporaries(os.path.join(root, "out"), spool, os.path.join(root, "state"))
    if temps:
        failures.append("temporary files left: %s" % temps)
    return failures, images_checked, integrity, rows, duplicate_metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the folder holding diffusiond")
    ap.add_argument("--models", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=None, help="work folder (default: a fresh one under /var/tmp, removed when all passed)")
    ap.add_argument("--report", default=None)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    models = os.path.abspath(args.models)
    bin_dir = os.path.abspath(args.bin)
    rng = random.Random(args.seed)
    jobs = make_jobs(args.jobs, rng)
    work = args.work or "/var/tmp/diffusiond-crash-campaign-%d" % os.getpid()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    started = time.monotonic()

    print("crash campaign: reference run of %d jobs" % len(jobs), flush=True)
    reference, load_seconds, ref_wall = run_reference(bin_dir, os.path.join(work, "reference"), models, jobs, args.timeout)
    print("  %d images in %.0f s (model load %.3f s)" % (len(reference), ref_wall, load_seconds), flush=True)

    root = os.path.join(work, "campaign")
    d = Daemon(bin_dir, root, config(models))
    d.load_seconds = load_seconds
    waves = [jobs[i::4] for i in range(4)]
    d.start()
    d.wait_ready()
    for name, text in waves.pop(0):
        d.drop(name + ".yml", text)

    kills = []
    hit = {}
    n = 0
    while n < 3 * args.kills:
        if n >= args.kills and all(p in hit for p in PHASES):
            break
        if not has_work(d) and not waves:
            print("  the queue ran dry after %d kills" % n, flush=True)
            break
        target = next_target(n, hit, waves)
        t = time.monotonic() - started
        if not aim(d, target, rng, root, waves):
            d.stop()
            d.start()
            continue
        phase = classify(d, root)
        hit[phase] = hit.get(phase, 0) + 1
        a = active_job(d)
        kills.append((n + 1, "%.1f" % t, target, phase, a[1] if a else "-", "%s/%s" % (a[3], a[2]) if a else "-"))
        print("  kill %2d at %6s s: aimed at %-12s hit %-12s job %-4s %s" % kills[-1], flush=True)
        n += 1
        d.start()
        # A kill aimed at the model load needs a start that has not finished yet.
        if next_target(n, hit, waves) != "model load":
            d.wait_ready()
    # Let the last start finish the queue.
    if d.proc is None:
        d.start()
    for name, text in [j for w in waves for j in w]:
        d.drop(name + ".yml", text)
    d.wait_ready()
    wait_for("every job to finish", lambda: not has_work(d) and
             len(os.listdir(os.path.join(root, "spool", "done"))) >= len(jobs), args.timeout, 0.5)
    alive_at_end = d.alive()
    rc = d.stop()
    wall = time.monotonic() - started

    failures, images_checked, integrity, rows, duplicate_metrics = check(d, root, jobs, reference)
    if not alive_at_end:
        failures.append("the daemon was not running at the end")
    if rc != 0:
        failures.append("SIGTERM at the end: exit status %s" % rc)
    missing = [p for p in PHASES if p not in hit]
    if missing:
        failures.append("phases never hit: %s" % missing)
    if len(kills) < args.kills:
        failures.append("only %d kills" % len(kills))

    total_images = sum(r[3] for r in rows)
    lines = []
    lines.append("diffusiond crash campaign (scripts/crash-campaign.py --jobs %d --kills %d --seed %d)" % (args.jobs, args.kills, args.seed))
    lines.append("date: %s UTC; host: %s; %d CPUs" % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), os.uname().nodename, os.cpu_count()))
    lines.append("jobs: %d real-engine jobs (fashion-mnist, 4-70 images, 10-20 steps, ddim/ddpm/analytic, class-conditional and "
                 "classifier-free, png and jpeg, some with view/ copies), %d images; batch_size 64, preload [fashion-mnist]"
                 % (len(jobs), total_images))
    lines.append("reference run (uninterrupted): %.0f s" % ref_wall)
    lines.append("campaign: %d SIGKILLs and %d starts in %.0f s" % (len(kills), d.starts, wall))
    lines.append("kills by phase hit: " + ", ".join("%s %d" % (p, hit.get(p, 0)) for p in PHASES + ["ingest", "startup", "idle"] if hit.get(p)))
    attempts = sorted(r[4] for r in rows)
    lines.append("attempts per job (1 = never interrupted): min %d, max %d, total %d" % (attempts[0], attempts[-1], sum(attempts)))
    lines.append("")
    lines.append("kill  time(s)  aimed at      hit           job   images recorded/total")
    for k in kills:
        lines.append("%4d  %7s  %-12s  %-12s  %-4s  %s" % k)
    lines.append("")
    lines.append("checks:")
    lines.append("  every job done exactly once, its file once in spool/done, incoming/active/failed empty")
    lines.append("  exactly its images: rows 0..n-1, those files and view/ copies, a contact sheet")
    lines.append("  %d images: SHA-256 and size equal to the database row; pixels equal to the uninterrupted run" % images_checked)
    lines.append("  no temporary files in out/, spool/, state/")
    lines.append("  PRAGMA integrity_check: %s; PRAGMA foreign_key_check: %s" % (
        integrity[0][0] if integrity else "?", "none" if not any("foreign_key" in f for f in failures) else "violations"))
    if duplicate_metrics:
        lines.append("  note: %d (job, metric) pairs recorded more than once (a kill after the metrics, before 'done')" % duplicate_metrics)
    lines.append("")
    lines.append("RESULT: %s" % ("PASSED" if not failures else "FAILED"))
    for f in failures[:50]:
        lines.append("  " + f)
    finish_report(lines, args.report, work, args.work, failures)
    if failures:
        print("work folder kept: %s" % work)
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()
