"""The egress guard's decisions (pure): only loopback is allowed, by name or by address."""

from __future__ import annotations

import socket

import pytest

from airlock.devstack.egress import guarded_env, is_loopback, read_log, refused


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", b"127.0.0.1", None])
def test_loopback_hosts_are_allowed(host: object) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1", "publicsuffix.org", "localhost.evil"]
)
def test_everything_else_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_refused_names_the_destination_of_connects_and_lookups() -> None:
    inet = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert refused("socket.getaddrinfo", ("publicsuffix.org", 443, 0, 0, 0)) == "resolve 'publicsuffix.org'"
        assert refused("socket.getaddrinfo", ("127.0.0.1", 9092, 0, 0, 0)) is None
        assert refused("socket.connect", (inet, ("192.0.2.7", 443))) == "connect ('192.0.2.7', 443)"
        assert refused("socket.connect", (inet, ("127.0.0.1", 9092))) is None
        assert refused("socket.sendto", (inet, ("203.0.113.5", 53))) == "sendto ('203.0.113.5', 53)"
        assert refused("socket.connect", (unix, "/tmp/some.sock")) is None
        assert refused("open", ("/etc/hosts",)) is None
    finally:
        inet.close()
        unix.close()


def test_guarded_env_puts_the_sitecustomize_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = guarded_env(tmp_path / "site", tmp_path / "egress.log", base={"PYTHONPATH": "/somewhere"})

    assert env["PYTHONPATH"].split(":") == [str(tmp_path / "site"), "/somewhere"]
    assert (tmp_path / "site" / "sitecustomize.py").read_text().count("AIRLOCK_EGRESS_LOG") == 2
    (tmp_path / "egress.log").write_text("pid=1 installed argv='x'\npid=1 refused resolve 'a.b'\n")
    assert read_log(tmp_path / "egress.log") == (["pid=1 installed argv='x'"], ["pid=1 refused resolve 'a.b'"])
