"""Development harnesses: they run the real processes of the stack and measure or judge
them; no process of the stack imports them.

- soak (tools/soak.py, `make soak`): the whole stack under load and faults, checked for
  loss. Its parts: faults (the fault driver and the bad lines it injects), load (client
  threads on the servers, other work on the machine), verdict (what each stage saw
  against what reached disk).
- model (tools/model_check.py, `make soak` and tests/test_model.py): seeded plans of
  appends, rotations, kills and operator commands, checked against an in-memory model.
- bench (bench/bench.py, `make bench`): throughput and latency of every stage, written to
  bench/results.md.
- livepage (tools/live_page_shot.py, and tests/test_live_page.py's browser): the live page
  in headless Chromium; the README's screenshot (docs/live_page.png) of a real run.

Here: the helpers they share (a free port, a make target in a scratch directory).
"""

import socket
import subprocess

from lumen import ROOT


_handed_out = set()  # the ports free_port gave this process


def free_port():
    """A TCP port nothing listens on now (the OS picks it), never one this process was given
    before: the OS hands a port it just released out again, and two servers of one private
    stack on the same port fail its start."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free TCP port left that this process was not given before")


def make(cwd, env, *targets, timeout=180):
    """Run make targets of this repository's Makefile with `cwd` as the state directory."""
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", str(ROOT / "Makefile"), *targets],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
