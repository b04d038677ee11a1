"""Secured listeners for the sandbox's Apache Kafka: TLS (with client certificates) and SCRAM.

:func:`make_security` writes a throw-away certificate authority, a broker certificate for
127.0.0.1 and localhost, and a client certificate into a folder, and names a SCRAM user.
Given to :class:`~stream_router.sandbox.kafka.KafkaBroker`, it adds two listeners beside the
plaintext one the sandbox itself uses:

- ``SSL`` on ``ssl_port``: TLS, and the client must present a certificate from the CA
  (``ssl.client.auth=required``), i.e. mutual TLS;
- ``SASL_SSL`` on ``sasl_ssl_port``: TLS with SCRAM-SHA-512 or SCRAM-SHA-256 logins; the
  user's credentials are written into the storage when it is formatted.

Everything is for tests on loopback: keys are unencrypted on disk except the broker's PKCS#12
keystore, whose password is in the broker's configuration.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stream_router.sandbox.process import free_port
from stream_router.sandbox.tokens import urlsafe_token

SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class BrokerSecurity:
    """Files and secrets of the secured listeners (see the module docstring)."""

    folder: Path
    ssl_port: int
    sasl_ssl_port: int
    username: str
    password: str
    keystore_password: str

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients trust (PEM)."""
        return self.folder / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client-key.pem"

    @property
    def ssl_servers(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_servers(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    def listeners(self) -> list[str]:
        return [f"SSL://{self.ssl_servers}", f"SASL_SSL://{self.sasl_ssl_servers}"]

    def server_properties(self) -> dict[str, str]:
        """The broker settings of both listeners (merged into ``server.properties``)."""
        properties = {
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.folder / "broker.p12"),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        }
        for mechanism in SCRAM_MECHANISMS:
            properties[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = (
                _LOGIN_MODULE
            )
        return properties

    def format_arguments(self) -> list[str]:
        """``StorageTool format`` arguments that store the SCRAM user's credentials."""
        arguments = []
        for mechanism in SCRAM_MECHANISMS:
            arguments += [
                "--add-scram",
                f"{mechanism}=[name={self.username},password={self.password}]",
            ]
        return arguments


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make_authority(folder: Path, name: str = "stream-router sandbox CA") -> None:
    """A CA in ``folder`` (``ca.pem`` and ``ca-key.pem``); another folder gives a CA that the
    first one's clients do not trust (for tests of untrusted certificates)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(name, key, _name(name), key, ca=True)
    (folder / "ca.pem").write_bytes(_pem(certificate))
    (folder / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_security(folder: Path, *, username: str = "stream-router") -> BrokerSecurity:
    """Certificates, keystore and a SCRAM user in ``folder``, on two free loopback ports."""
    make_authority(folder)
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    security = BrokerSecurity(
        folder=folder,
        ssl_port=free_port(),
        sasl_ssl_port=free_port(),
        username=username,
        password=urlsafe_token(18),
        keystore_password=urlsafe_token(18),
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = _certificate("127.0.0.1", broker_key, ca_cert.subject, ca_key, server=True)
    (folder / "broker.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"broker",
            broker_key,
            broker_cert,
            [ca_cert],
            serialization.BestAvailableEncryption(security.keystore_password.encode()),
        )
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate(username, client_key, ca_cert.subject, ca_key)
    security.client_cert.write_bytes(_pem(client_cert))
    security.client_key.write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return security
