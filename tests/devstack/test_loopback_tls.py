"""The loopback certificate that Azurite's OAuth mode serves: trusted only through its own CA file."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from devstack.loopback_tls import make_loopback_certificate

pytestmark = pytest.mark.unit


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext, host: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client_context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"x")
        thread.join(timeout=5)


def test_the_certificate_verifies_for_loopback_names_with_its_ca_only(tmp_path: Path) -> None:
    files = make_loopback_certificate(tmp_path)
    assert files.key_file.stat().st_mode & 0o077 == 0  # the private key is readable by its owner only
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert_file, files.key_file)
    trusting = ssl.create_default_context(cafile=str(files.ca_file))
    handshake(server, trusting, "127.0.0.1")
    handshake(server, trusting, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, ssl.create_default_context(), "127.0.0.1")  # the system store does not trust it
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, trusting, "example.com")  # and it names only loopback
