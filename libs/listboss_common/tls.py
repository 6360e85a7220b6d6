"""TLS for every port a service serves, and for our own clients of them.

Server side (:class:`ServerTls`, read once at start-up by :meth:`ServerTls.from_env`):

* ``LISTBOSS_TLS_CERT_FILE`` and ``LISTBOSS_TLS_KEY_FILE`` (PEM; both or neither) turn TLS on
  for the gRPC port and for ingest's webhook receiver. Neither: plaintext, the local default.
  The files are read and checked before anything listens, so a missing, unreadable or invalid
  file, or a key that does not belong to the certificate, fails the start naming the file.
* ``LISTBOSS_TLS_CLIENT_CA_FILE`` (PEM, only with the two above) turns on mutual TLS for gRPC:
  grpc python can either not ask for a client certificate or ask for one and require it (its
  ``require_client_auth``; asking without requiring is not exposed), so with a client CA every
  gRPC caller must present a certificate signed by it. On top of that, the request
  interceptor admits the internal role only over a connection whose client certificate was
  verified (:func:`client_certificate_verified`): a leaked internal token alone is not enough.
  The webhook receiver never asks for client certificates: the platform authenticates with
  its per-producer token.
* TLS 1.2 is the oldest version either port accepts. Certificates are read at start-up only:
  a restart picks up renewed files.

Client side (:class:`ClientTls`): our health probe, ``listboss-ops`` and the demo read
``LISTBOSS_TLS_CA_FILE`` (the CA that signed the servers' certificates; without it, the
system's roots), ``LISTBOSS_TLS_CLIENT_CERT_FILE`` / ``LISTBOSS_TLS_CLIENT_KEY_FILE`` (for mutual
TLS) and ``LISTBOSS_TLS_SERVER_NAME`` (the name to verify when the address is not a name in the
certificate, e.g. a probe calling 127.0.0.1); any of the first three turns TLS on.
:func:`grpc_channel` and :func:`grpc_aio_channel` return a secure channel with it, a plaintext
one without.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from listboss_common.config import ConfigError

CERT_FILE_ENV = "LISTBOSS_TLS_CERT_FILE"
KEY_FILE_ENV = "LISTBOSS_TLS_KEY_FILE"
CLIENT_CA_FILE_ENV = "LISTBOSS_TLS_CLIENT_CA_FILE"
CA_FILE_ENV = "LISTBOSS_TLS_CA_FILE"
CLIENT_CERT_FILE_ENV = "LISTBOSS_TLS_CLIENT_CERT_FILE"
CLIENT_KEY_FILE_ENV = "LISTBOSS_TLS_CLIENT_KEY_FILE"
SERVER_NAME_ENV = "LISTBOSS_TLS_SERVER_NAME"

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

ChannelOptions = Sequence[tuple[str, Any]]


# --- reading and checking files --------------------------------------------------------------


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror or error}") from None


def _certificates(path: Path, setting: str) -> bytes:
    data = _read(path, setting)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{setting}: {path} holds no PEM certificate") from None
    return data


def _private_key(path: Path, setting: str) -> bytes:
    data = _read(path, setting)
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{setting}: {path} is encrypted; give an unencrypted PEM private key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} holds no PEM private key") from None
    return data


def _check_pair(cert_file: Path, key_file: Path, cert_setting: str, key_setting: str) -> None:
    """Fails unless the key is the certificate's (the check OpenSSL makes when it loads them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError:
        raise ConfigError(
            f"{key_setting}: {key_file} is not the private key of the certificate in {cert_setting} ({cert_file})"
        ) from None


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "").strip()
    return Path(value) if value else None


# --- servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key (PEM), and the CA of its clients for mutual TLS."""

    cert_file: Path
    key_file: Path
    certificate_chain: bytes
    private_key: bytes
    client_ca_file: Path | None = None
    client_ca: bytes | None = None

    @classmethod
    def load(cls, cert_file: Path | str, key_file: Path | str, client_ca_file: Path | str | None = None) -> ServerTls:
        """Reads and checks the files; raises ConfigError naming the setting and file at fault."""
        cert_path, key_path = Path(cert_file), Path(key_file)
        chain = _certificates(cert_path, CERT_FILE_ENV)
        key = _private_key(key_path, KEY_FILE_ENV)
        _check_pair(cert_path, key_path, CERT_FILE_ENV, KEY_FILE_ENV)
        ca_path = Path(client_ca_file) if client_ca_file else None
        client_ca = _certificates(ca_path, CLIENT_CA_FILE_ENV) if ca_path else None
        return cls(cert_path, key_path, chain, key, ca_path, client_ca)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerTls | None:
        """The TLS settings of a service; None (plaintext) when none is given."""
        env = os.environ if environ is None else environ
        cert, key, client_ca = (_path(env, name) for name in (CERT_FILE_ENV, KEY_FILE_ENV, CLIENT_CA_FILE_ENV))
        if cert is None and key is None:
            if client_ca is not None:
                raise ConfigError(f"{CLIENT_CA_FILE_ENV} needs {CERT_FILE_ENV} and {KEY_FILE_ENV}: mutual TLS is TLS")
            return None
        if cert is None:
            raise ConfigError(f"{KEY_FILE_ENV} is set but {CERT_FILE_ENV} is not: TLS needs both")
        if key is None:
            raise ConfigError(f"{CERT_FILE_ENV} is set but {KEY_FILE_ENV} is not: TLS needs both")
        return cls.load(cert, key, client_ca)

    @property
    def mutual(self) -> bool:
        """True when gRPC callers must present a certificate signed by the client CA."""
        return self.client_ca is not None

    @property
    def mode(self) -> str:
        """What the logs say: ``tls`` or ``mtls``."""
        return "mtls" if self.mutual else "tls"

    def grpc_credentials(self) -> grpc.ServerCredentials:
        # grpc's TLS stack accepts TLS 1.2 and 1.3 only; the same floor as http_ssl_context.
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )

    def http_ssl_context(self) -> ssl.SSLContext:
        """For the webhook receiver: server certificate only, no client certificates asked."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = MINIMUM_VERSION
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def client_certificate_verified(context: grpc.aio.ServicerContext) -> bool:
    """True when the RPC came over TLS with a client certificate that the server verified.

    gRPC puts the peer's certificate in the auth context only after verifying it against the
    client CA (the server requires and verifies when one is configured)."""
    auth = context.auth_context() or {}
    secured = b"ssl" in auth.get("transport_security_type", ())
    return secured and bool(auth.get("x509_pem_cert"))


# --- our own clients -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """How our tools reach a TLS port: the CA to trust (None: the system's roots), a client
    certificate and key for mutual TLS, and the name to verify when it is not the address's."""

    ca: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    @classmethod
    def load(
        cls,
        ca_file: Path | str | None = None,
        cert_file: Path | str | None = None,
        key_file: Path | str | None = None,
        server_name: str | None = None,
    ) -> ClientTls:
        if bool(cert_file) != bool(key_file):
            missing = CLIENT_KEY_FILE_ENV if cert_file else CLIENT_CERT_FILE_ENV
            raise ConfigError(f"a client certificate needs its key and the key its certificate: set {missing}")
        ca = _certificates(Path(ca_file), CA_FILE_ENV) if ca_file else None
        chain = key = None
        if cert_file and key_file:
            chain = _certificates(Path(cert_file), CLIENT_CERT_FILE_ENV)
            key = _private_key(Path(key_file), CLIENT_KEY_FILE_ENV)
            _check_pair(Path(cert_file), Path(key_file), CLIENT_CERT_FILE_ENV, CLIENT_KEY_FILE_ENV)
        return cls(ca, chain, key, server_name or None)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        ca_file: Path | str | None = None,
        cert_file: Path | str | None = None,
        key_file: Path | str | None = None,
    ) -> ClientTls | None:
        """Files given as arguments (command-line options) win over the environment's; None
        (plaintext) when no CA and no client certificate is given either way."""
        env = os.environ if environ is None else environ
        ca = ca_file or _path(env, CA_FILE_ENV)
        cert = cert_file or _path(env, CLIENT_CERT_FILE_ENV)
        key = key_file or _path(env, CLIENT_KEY_FILE_ENV)
        if not (ca or cert or key):
            return None
        return cls.load(ca, cert, key, env.get(SERVER_NAME_ENV, "").strip() or None)

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.private_key, self.certificate_chain)

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def grpc_channel(address: str, tls: ClientTls | None, options: ChannelOptions = ()) -> grpc.Channel:
    """A channel to ``address``: over TLS with ``tls``, plaintext without."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.grpc_credentials(), options=[*options, *tls.channel_options()])


def grpc_aio_channel(address: str, tls: ClientTls | None, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """:func:`grpc_channel` for asyncio."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, tls.grpc_credentials(), options=[*options, *tls.channel_options()])
