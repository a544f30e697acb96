"""`amqps://` in FREIGHT_AMQP_URL is TLS, with the broker's certificate checked against its host.

A TLS server on loopback stands in for the broker: it completes the handshake and reads the
AMQP protocol header, which is all that is needed to show the connection was made over TLS to a
verified peer. Nothing leaves the machine."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path
from urllib.parse import quote

import pika.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from freight_server.shared.bus import connect, connection_parameters


def test_an_amqps_url_is_tls_with_the_host_checked():
    params = connection_parameters("amqps://freight:pw@broker.internal/prod", "test")
    assert params.port == 5671
    assert params.ssl_options is not None
    assert params.ssl_options.context.check_hostname
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert params.credentials.username == "freight" and params.virtual_host == "prod"
    plain = connection_parameters("amqp://guest:guest@127.0.0.1:5672/", "test")
    assert plain.ssl_options is None


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "freight test broker")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "broker.pem", directory / "broker.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsBroker:
    """Accepts one TLS connection on loopback and keeps what it read, or why it failed."""

    def __init__(self, cert: Path, key: Path):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        connection.settimeout(5)
        try:
            with self.context.wrap_socket(connection, server_side=True) as tls:
                self.received = tls.recv(8)
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
        finally:
            self.listener.close()


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


def test_it_speaks_amqp_over_tls_to_a_broker_it_trusts(certificate):
    cert, key = certificate
    broker = TlsBroker(cert, key)
    options = quote(str({"ca_certs": str(cert)}))
    url = f"amqps://guest:guest@127.0.0.1:{broker.port}/?ssl_options={options}"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(url, "tls-test")  # the stand-in hangs up after the protocol header
    broker.thread.join(timeout=10)
    assert broker.error is None
    assert broker.received == b"AMQP\x00\x00\x09\x01"


def test_it_refuses_a_broker_whose_certificate_it_cannot_verify(certificate):
    cert, key = certificate
    broker = TlsBroker(cert, key)  # self-signed, and not in the system's CAs
    # An OSError, as every service takes a broker it cannot reach: it retries, it never
    # falls back to plain AMQP.
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(f"amqps://guest:guest@127.0.0.1:{broker.port}/", "tls-test")
    broker.thread.join(timeout=10)
    assert broker.received == b""  # no AMQP, so no credentials, went to it
