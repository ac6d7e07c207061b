"""What supervisord runs for a Lumen program: count the spawn, then exec the real command.

    python lumen/supervise_spawn.py /abs/state/run/NAME.json

`lumen.ctl start` records the command and the caller's environment in run/NAME.json; every
spawn (the first and each restart) appends one line to run/NAME.spawns, which is how
`make status` counts restarts, and then becomes the command with exec: same PID, so
supervisord's signals and the process' own run/NAME.pid name the real process.
Standard library only, run by path (no package import): it sits on every restart.
"""

import json
import os
import sys
import time


def main(meta_path):
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    spawns = meta_path[: -len(".json")] + ".spawns"
    with open(spawns, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {time.time():.3f}\n")
    env = dict(meta["env"])
    # supervisord's own variables (SUPERVISOR_SERVER_URL, SUPERVISOR_PROCESS_NAME, ...)
    # mark the process as this state directory's, so an orphan can be recognised safely.
    env.update({k: v for k, v in os.environ.items() if k.startswith("SUPERVISOR_")})
    cmd = meta["cmd"]
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        print(f"error: cannot run {cmd[0]}: {e.strerror}", file=sys.stderr, flush=True)
        return 127


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].endswith(".json"):
        print("usage: supervise_spawn.py RUN_DIR/NAME.json", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
