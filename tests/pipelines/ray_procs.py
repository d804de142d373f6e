"""Finding and stopping the processes of one Ray instance, and their listening sockets."""

import contextlib
import ipaddress
import time

import psutil


def processes_of(marker: str) -> list[psutil.Process]:
    """Processes with ``marker`` (a Ray temp dir, or a GCS address) ending one of their
    command-line arguments or inside one, and all their descendants (agents and workers,
    whose command lines Ray rewrites to ``ray::...``)."""
    procs = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in (arg or "") for arg in (p.info["cmdline"] or [])):
                procs[p.pid] = p
                procs.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    return list(procs.values())


def stop(procs: list[psutil.Process], timeout_s: float = 3.0) -> None:
    # The GCS and the dashboard outlive a SIGTERM by many seconds here; nothing in them is
    # needed any more, so they get SIGKILL after a short grace.
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in procs):
        time.sleep(0.2)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def alive(p: psutil.Process) -> bool:
    # A zombie (its parent, e.g. the `ray start` CLI, exited long ago) is already stopped.
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listeners(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of these processes."""
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            with contextlib.suppress(psutil.Error):
                out.append((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1, as the gRPC servers report it
    return ip.is_loopback
