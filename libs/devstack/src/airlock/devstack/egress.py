"""An egress guard: refuse, and record, every network connection that is not to loopback.

Installed in a process as a Python audit hook (:pep:`578`), it runs *before* the socket
call: ``socket.getaddrinfo`` for a name other than ``localhost`` (a DNS query would leave the
machine) and ``socket.connect``/``sendto``/``sendmsg`` to an address outside 127.0.0.0/8
and ::1 raise ``PermissionError`` and append a line to the guard's log. Nothing is sent.

Tests run a service under it by putting :func:`write_sitecustomize`'s directory first on
``PYTHONPATH`` and ``AIRLOCK_EGRESS_LOG`` in its environment: every Python process started
that way installs the guard at start-up, before any library is imported, and writes an
``installed`` line, so a test can prove the guard was there and that nothing was refused.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any

LOG_VARIABLE = "AIRLOCK_EGRESS_LOG"
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: Any) -> bool:
    """Whether ``host`` (a name, an address text, or bytes) is this machine's loopback."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard, no lookup
    text = str(host).strip("[]").split("%", 1)[0]
    if text.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False  # a name to resolve: that would be a DNS query


def _address_host(address: Any) -> Any:
    if isinstance(address, tuple) and address:
        return address[0]
    return None  # an AF_UNIX path or other local socket


def refused(event: str, args: tuple[Any, ...]) -> str | None:
    """The destination an audit event would reach, when it is not loopback (else ``None``)."""
    if event == "socket.getaddrinfo":
        host = args[0]
        return None if is_loopback(host) else f"resolve {host!r}"
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1] if len(args) > 1 else None
        family = getattr(sock, "family", None)
        if family not in (socket.AF_INET, socket.AF_INET6) or address is None:
            return None
        host = _address_host(address)
        return None if is_loopback(host) else f"{event.split('.', 1)[1]} {address!r}"
    return None


def install(log_path: Path) -> None:
    """Install the guard in this process, recording refusals (and its installation) in ``log_path``."""

    def record(line: str) -> None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"pid={os.getpid()} {line}\n")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not event.startswith("socket."):
            return
        destination = refused(event, args)
        if destination is not None:
            record(f"refused {destination}")
            raise PermissionError(f"egress guard: {destination} refused (only loopback is allowed)")

    sys.addaudithook(hook)
    record(f"installed argv={' '.join(sys.argv[:4])!r}")


SITECUSTOMIZE = '''\
"""Installed by airlock.devstack.egress: refuse non-loopback network access in this process."""
import os
from pathlib import Path

if os.environ.get("{variable}"):
    from airlock.devstack.egress import install

    install(Path(os.environ["{variable}"]))
'''


def write_sitecustomize(directory: Path) -> Path:
    """Write a ``sitecustomize.py`` that installs the guard where ``AIRLOCK_EGRESS_LOG`` is set."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE.format(variable=LOG_VARIABLE))
    return directory


def guarded_env(directory: Path, log_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment entries that start a Python process under the guard."""
    base = dict(os.environ if base is None else base)
    path = [str(write_sitecustomize(directory)), *filter(None, base.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path), LOG_VARIABLE: str(log_path)}


def read_log(log_path: Path) -> tuple[list[str], list[str]]:
    """The ``installed`` lines and the ``refused`` lines of a guard log."""
    lines = log_path.read_text(encoding="utf-8").splitlines() if log_path.exists() else []
    return [line for line in lines if " installed " in line], [line for line in lines if " refused " in line]
