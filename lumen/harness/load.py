"""Load beside the stack under test, both as context managers that stop what they started.

- Clients: 16 threads requesting the servers (/metrics, /metrics_ure, the API) until the
  block ends, counting statuses; a refused connection (a server being restarted) is
  counted apart, not as a 5xx.
- Hogs: other work on the machine, as a busy host has it (`--hog cpu|disk|cpu,disk`): one
  busy loop per core and/or a loop writing and fsyncing 1 GiB files; stopped by the PIDs
  started here, never by name.
"""

import os
import signal
import subprocess
import threading
from collections import Counter

import requests


class Clients:
    """16 threads requesting the servers until stopped; counts statuses."""

    def __init__(self, urls, n=16):
        self.urls, self.n = urls, n
        self.status = Counter()
        self.errors = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def _run(self, i):
        s = requests.Session()
        k = i
        while not self.stop.is_set():
            url = self.urls[k % len(self.urls)]
            k += 1
            try:
                code = s.get(url, timeout=5).status_code
                with self.lock:
                    self.status[code] += 1
            except requests.RequestException:  # a server being restarted: not a 5xx
                with self.lock:
                    self.errors += 1
                self.stop.wait(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


class Hogs:
    """Other work on the machine, as a busy host has it: `cpu` runs one busy loop per core,
    `disk` a loop writing and fsyncing 1 GiB files in the scratch directory. Stopped by the
    PIDs started here."""

    def __init__(self, kinds, where):
        self.kinds, self.where, self.procs = kinds, where, []

    def __enter__(self):
        if "cpu" in self.kinds:
            for _ in range(os.cpu_count() or 2):
                self.procs.append(subprocess.Popen(["yes"], stdout=subprocess.DEVNULL))
        if "disk" in self.kinds:
            self.where.mkdir(parents=True, exist_ok=True)
            big = self.where / "hog.bin"
            self.procs.append(
                subprocess.Popen(
                    [
                        "bash",
                        "-c",
                        f"while true; do dd if=/dev/zero of={big} bs=1M count=1024 "
                        f"conv=fsync status=none; rm -f {big}; done",
                    ],
                    start_new_session=True,
                )
            )
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                if p.args[0] == "bash":
                    os.killpg(p.pid, signal.SIGKILL)  # the loop and its dd
                else:
                    p.kill()
            except ProcessLookupError:
                pass
            p.wait()
        (self.where / "hog.bin").unlink(missing_ok=True)
