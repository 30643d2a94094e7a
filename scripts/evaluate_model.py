#!/usr/bin/env python3
"""Measures a UNet bundle as a user meets it: starts diffusiond on a throwaway folder whose
models/ holds the bundle under the name fashion-mnist (beside the committed classifier and
features bundles), submits the issue's evaluation jobs (N images, seed 7) and reads the daemon's
own metrics.json of each. Appends one row per job to a TSV (training/evaluations.tsv by default).

    scripts/evaluate_model.py --bundle training/work/snapshots/step-6500 --jobs ddpm50,ddim50,cfg2
    scripts/evaluate_model.py --bundle models/fashion-mnist --images 1000

BIN: the folder with diffusiond and diffusionctl (default: the release build's bin path)."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOBS = {
    "ddpm50": "sampler: {kind: ddpm, steps: 50}",
    "ddpm50-small": "sampler: {kind: ddpm, steps: 50, variance: fixed_small}",
    "ddim50": "sampler: {kind: ddim, steps: 50, eta: 0}",
    "cfg2": "mode: classifier-free\nsampler: {kind: ddpm, steps: 50, guidance_scale: 2}",
    "analytic-ddpm10": "sampler: {kind: analytic-ddpm, steps: 10}",
}


def bin_path():
    if os.environ.get("BIN"):
        return os.environ["BIN"]
    return subprocess.run(["swift", "build", "-c", "release", "-Xswiftc", "-target-cpu", "-Xswiftc", "skylake-avx512",
                           "--show-bin-path"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--jobs", default="ddpm50,ddim50,cfg2", help=",".join(JOBS))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "training", "evaluations.tsv"))
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--keep-sheets", help="copy each job's contact sheet into this folder as <job>.png")
    args = ap.parse_args()
    bundle = os.path.abspath(args.bundle)
    manifest = json.load(open(os.path.join(bundle, "model.json")))
    recipe = manifest.get("recipe", {})
    binp = bin_path()
    work = tempfile.mkdtemp(prefix="diffusiond-eval-")
    models = os.path.join(work, "models")
    os.makedirs(models)
    shutil.copytree(bundle, os.path.join(models, "fashion-mnist"))
    for other in ("fashion-mnist-classifier", "fashion-mnist-features"):
        os.symlink(os.path.join(ROOT, "models", other), os.path.join(models, other))
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(f"spool: spool\noutput: output\nstate: state\nmodels: models\nthreads: {args.threads}\n"
                "preload: [fashion-mnist]\nlog_level: notice\n")
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    env.pop("OPENBLAS_CORETYPE", None)
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([os.path.join(binp, "diffusiond"), "--config", config], stdout=log, stderr=log, env=env)
    rows = []
    try:
        ctl = lambda *a: subprocess.run([os.path.join(binp, "diffusionctl"), a[0], "--config", config, *a[1:]],
                                        capture_output=True, text=True)
        for _ in range(600):
            status = ctl("status", "--json")
            if status.returncode == 0 and json.loads(status.stdout)["daemon"]["alive"]:
                break
            time.sleep(0.2)
        names = args.jobs.split(",")
        for i, name in enumerate(names):
            path = os.path.join(work, f"{i:02d}-{name}.yml")
            with open(path, "w") as f:
                f.write(f"name: {name}\nmodel: fashion-mnist\nimages: {args.images}\nseed: {args.seed}\n"
                        f"priority: {100 - i}\n{JOBS[name]}\n")
            r = ctl("submit", path)
            if r.returncode != 0:
                sys.exit(f"evaluate: submit {name}: {r.stderr}")
        deadline = time.time() + args.timeout
        started = time.time()
        while time.time() < deadline:
            jobs = json.loads(ctl("jobs", "--json", "--limit", "50").stdout)
            mine = {j["name"]: j for j in jobs if j["name"] in names}
            finished = [j for j in mine.values() if j["state"] in ("done", "failed", "canceled")]
            metrics_ready = all(os.path.exists(os.path.join(work, "output", f"{j['id']}-{j['name']}", "metrics.json"))
                                for j in finished if j["state"] == "done")
            if len(finished) == len(names) and metrics_ready:
                break
            time.sleep(5)
        else:
            sys.exit("evaluate: jobs did not finish in time")
        for name in names:
            j = mine[name]
            if j["state"] != "done":
                sys.exit(f"evaluate: job {name} {j['state']}")
            folder = os.path.join(work, "output", f"{j['id']}-{name}")
            m = json.load(open(os.path.join(folder, "metrics.json")))
            if args.keep_sheets:
                os.makedirs(args.keep_sheets, exist_ok=True)
                shutil.copy(os.path.join(folder, "contact-sheet.png"), os.path.join(args.keep_sheets, f"{name}.png"))
            fid = m.get("fid") or {}
            acc = m.get("class_accuracy") or {}
            pr = m.get("precision_recall") or {}
            rows.append([os.path.relpath(bundle, ROOT), recipe.get("steps"), recipe.get("images_seen", ""), name, args.images, args.seed,
                         fid.get("value"), fid.get("data_floor"), acc.get("value"), acc.get("real_image_accuracy"),
                         pr.get("precision"), pr.get("recall"), round(time.time() - started)])
            print(f"evaluate: {name}: FID {fid.get('value')} (floor {fid.get('data_floor')}), class accuracy "
                  f"{acc.get('value')}, precision {pr.get('precision')}, recall {pr.get('recall')}", flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
    new = not os.path.exists(args.out)
    with open(args.out, "a") as f:
        if new:
            f.write("bundle\tsteps\timages_seen\tjob\tn\tseed\tfid\tfid_floor\tclass_accuracy\treal_accuracy\tprecision\trecall\twall_s\n")
        for r in rows:
            f.write("\t".join("" if v is None else str(v) for v in r) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
