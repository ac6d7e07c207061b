"""Who holds a TCP port: for the one-line 'port busy' error."""

import errno
import os
import socket


class PortInUse(Exception):
    """A server could not listen: the message names the port and, if known, its owner."""


def _listening_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    cols = row.split()
                    local, state, inode = cols[1], cols[3], cols[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except (FileNotFoundError, PermissionError):  # not Linux, or hidden from us
            continue
    return inodes


def owner(port):
    """'pid 123 (python -u exporters/...)' for the process listening on `port`, or None."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (PermissionError, FileNotFoundError):  # other user's, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid} ({cmd[:120]})"
            except (PermissionError, FileNotFoundError):
                continue
    return "another process"


def busy_message(host, port):
    who = owner(port)
    return f"port {port} on {host} is already in use" + (f" by {who}" if who else "")


def is_free(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        s.close()


def answers(host, port, timeout=0.5):
    """True when something accepts a TCP connection on host:port."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
