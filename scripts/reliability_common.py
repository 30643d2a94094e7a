"""Helpers shared by the reliability scripts (crash-campaign.py, load-test.py):
a daemon on a throwaway root, its database read-only, image pixel digests.
Standard library only."""

import atexit
import hashlib
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import time
import zlib


_daemons = []


@atexit.register
def _kill_leftovers():
    """A script that stops on an error leaves no daemon running."""
    for d in _daemons:
        if d.alive():
            d.kill()


class Daemon:
    """A diffusiond on `root` (config.yml, spool/, out/, state/, daemon.log)."""

    def __init__(self, bin_dir, root, config_text, nice=0):
        _daemons.append(self)
        self.nice = nice
        self.bin = bin_dir
        self.root = root
        self.proc = None
        self.log_path = os.path.join(root, "daemon.log")
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "config.yml"), "w") as f:
            f.write(config_text)
        self.db_path = os.path.join(root, "state", "diffusiond.sqlite")
        self.starts = 0

    @property
    def config(self):
        return os.path.join(self.root, "config.yml")

    def start(self):
        """Starts the daemon (as the systemd unit would: OPENBLAS_CORETYPE unset,
        OMP_WAIT_POLICY=passive); returns the log offset of this start."""
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("DIFFUSIOND_TEST_GENERATOR", None)
        env["OMP_WAIT_POLICY"] = "passive"
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        nice = self.nice
        self.proc = subprocess.Popen([os.path.join(self.bin, "diffusiond"), "--config", self.config],
                                     stdout=log, stderr=log, env=env, start_new_session=True,
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None)
        log.close()
        if nice:
            # With autogroup scheduling (kernel.sched_autogroup_enabled=1) a process
            # in a session of its own competes as a group, whatever its nice value:
            # give the group the same nice, as systemd's Nice= does for the service.
            try:
                with open("/proc/%d/autogroup" % self.proc.pid, "w") as f:
                    f.write(str(nice))
            except OSError:
                pass
        self.starts += 1
        self.start_offset = offset
        self.started_at = time.monotonic()
        return offset

    def log_since_start(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.start_offset)
            return f.read().decode("utf-8", "replace")

    def is_ready(self):
        return "diffusiond ready" in self.log_since_start()

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if self.proc.poll() is not None:
                raise RuntimeError("diffusiond exited with %s:\n%s" % (self.proc.returncode, self.log_since_start()[-3000:]))
            time.sleep(0.01)
        raise RuntimeError("diffusiond not ready after %s s" % timeout)

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        rc = self.proc.wait()
        self.proc = None
        return rc

    def stop(self, timeout=120):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def db(self):
        """A read-only connection (the daemon keeps writing; WAL lets both work)."""
        conn = sqlite3.connect("file:%s?mode=ro" % self.db_path, uri=True, timeout=5)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    def drop(self, name, text):
        """Writes a job file the way a careful writer does: a dot-name, then a rename."""
        incoming = os.path.join(self.root, "spool", "incoming")
        tmp = os.path.join(incoming, "." + name + ".part")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(incoming, name))


def wait_for(what, condition, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise RuntimeError("timed out waiting for " + what)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def pixel_digest(path):
    """A digest of an image's pixels, not of its metadata (the embedded record
    carries the job id and a time): PNG: IHDR and the inflated IDAT stream;
    JPEG: every segment but APPn and COM, then the entropy-coded scan."""
    data = open(path, "rb").read()
    h = hashlib.sha256()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos, idat = 8, []
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            if kind == b"IHDR":
                h.update(body)
            elif kind == b"IDAT":
                idat.append(body)
            pos += 12 + length
        h.update(zlib.decompress(b"".join(idat)))
        return "png:" + h.hexdigest()
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos < len(data):
            marker = data[pos + 1]
            length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
            if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
                h.update(data[pos:pos + 2 + length])
            if marker == 0xDA:  # start of scan: the rest is image data
                h.update(data[pos + 2 + length:])
                break
            pos += 2 + length
        return "jpeg:" + h.hexdigest()
    raise ValueError("%s is neither PNG nor JPEG" % path)


def temporaries(*roots):
    """Temporary files anywhere below `roots`: the daemon's atomic-write
    temporaries (.<name>.tmp-<pid>-<n>) and .part files."""
    found = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                if (name.startswith(".") and ".tmp-" in name) or name.endswith(".part"):
                    found.append(os.path.join(dirpath, name))
    return found


def vm_status(pid):
    """VmRSS and VmHWM of a process in KiB."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def finish_report(lines, report_path, work, keep_work, failures):
    """Prints the report, writes it to report_path (if any), and removes the work folder when
    everything passed and it was not asked to be kept."""
    text = "\n".join(lines) + "\n"
    print(text)
    if report_path:
        os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
        with open(report_path, "w") as f:
            f.write(text)
    if not failures and not keep_work:
        shutil.rmtree(work, ignore_errors=True)
