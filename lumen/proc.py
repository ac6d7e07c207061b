"""Lifecycle of a long-running Lumen process (DESIGN.md section 3).

`Lifecycle(name)` writes `run/<name>.pid` once the process is ready, turns SIGTERM and
SIGINT into a `stop` event the main loop watches (so it can flush and checkpoint), and
removes its PID file on the way out. `cli_main` gives every entry point the same exit
codes: bad usage or config -> one line on stderr and 2, runtime failure -> 1.
"""
import os
import signal
import sys
import threading
from pathlib import Path

from .config import ConfigError
from .httpserve import PortInUse


class Lifecycle:
    def __init__(self, name, run_dir="run"):
        self.name = name
        self.pidfile = Path(run_dir) / f"{name}.pid"
        self.stop = threading.Event()
        self._old = {}

    def _on_signal(self, signum, frame):
        self.stop.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def ready(self):
        """Announce readiness: the PID file is what `lumen.ctl start` waits for."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pidfile.with_suffix(".pid.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.pidfile)

    def __exit__(self, *exc):
        try:
            if self.pidfile.read_text().strip() == str(os.getpid()):
                self.pidfile.unlink()
        except FileNotFoundError:
            pass
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def cli_main(main):
    """Run `main()` (returns an exit code) turning expected failures into one line each."""
    try:
        return main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PortInUse as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
