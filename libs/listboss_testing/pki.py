"""Certificates for the TLS tests: a throw-away PKI made with trustme, written to files the way
an operator would hand them to a service (``LISTBOSS_TLS_*``, docs/operations.md)."""

from __future__ import annotations

from pathlib import Path

import trustme

from listboss_common.tls import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    CLIENT_CA_FILE_ENV,
    CLIENT_CERT_FILE_ENV,
    CLIENT_KEY_FILE_ENV,
    KEY_FILE_ENV,
    ClientTls,
    ServerTls,
)


class Pki:
    """A server CA with a certificate for 127.0.0.1 / localhost, a client CA with a client
    certificate, and a CA nobody trusts, as files in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.server_ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.other_ca = trustme.CA()
        server = self.server_ca.issue_cert("127.0.0.1", "localhost")
        client = self.client_ca.issue_cert("ops.listboss.test", common_name="ops")
        stranger = self.other_ca.issue_cert("ops.listboss.test", common_name="stranger")
        self.ca_file = self._write("ca.pem", self.server_ca.cert_pem.bytes())
        self.client_ca_file = self._write("client-ca.pem", self.client_ca.cert_pem.bytes())
        self.other_ca_file = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.cert_file = self._write("server.pem", b"".join(pem.bytes() for pem in server.cert_chain_pems))
        self.key_file = self._write("server.key", server.private_key_pem.bytes())
        self.client_cert_file = self._write("client.pem", b"".join(pem.bytes() for pem in client.cert_chain_pems))
        self.client_key_file = self._write("client.key", client.private_key_pem.bytes())
        self.stranger_cert_file = self._write("stranger.pem", stranger.cert_chain_pems[0].bytes())
        self.stranger_key_file = self._write("stranger.key", stranger.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def server(self, mutual: bool = False) -> ServerTls:
        return ServerTls.load(self.cert_file, self.key_file, self.client_ca_file if mutual else None)

    def client(self, with_certificate: bool = False) -> ClientTls:
        if with_certificate:
            return ClientTls.load(self.ca_file, self.client_cert_file, self.client_key_file)
        return ClientTls.load(self.ca_file)

    def server_env(self, mutual: bool = False) -> dict[str, str]:
        """A service's TLS settings, plus what its health probe needs to reach it (the CA, and
        under mutual TLS the client certificate)."""
        env = {CERT_FILE_ENV: str(self.cert_file), KEY_FILE_ENV: str(self.key_file), CA_FILE_ENV: str(self.ca_file)}
        if mutual:
            env[CLIENT_CA_FILE_ENV] = str(self.client_ca_file)
            env[CLIENT_CERT_FILE_ENV] = str(self.client_cert_file)
            env[CLIENT_KEY_FILE_ENV] = str(self.client_key_file)
        return env
