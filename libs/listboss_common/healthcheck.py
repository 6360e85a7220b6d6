"""``python -m listboss_common.healthcheck HOST:PORT`` exits 0 when the service answers SERVING.

Used by docker-compose health checks, where no grpcurl is at hand. Over TLS when the
environment gives a CA or a client certificate (``LISTBOSS_TLS_CA_FILE``,
``LISTBOSS_TLS_CLIENT_CERT_FILE`` / ``LISTBOSS_TLS_CLIENT_KEY_FILE``, and
``LISTBOSS_TLS_SERVER_NAME`` when the certificate does not name 127.0.0.1): see
:mod:`listboss_common.tls`.
"""

from __future__ import annotations

import sys

from grpc_health.v1 import health_pb2

from listboss_common.config import ConfigError
from listboss_common.processes import health_status
from listboss_common.tls import ClientTls


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    try:
        tls = ClientTls.from_env()
    except ConfigError as error:
        print(f"{address}: {error}", file=sys.stderr)
        return 1
    status = health_status(address, timeout=3, tls=tls)
    answered = status in health_pb2.HealthCheckResponse.ServingStatus.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    # A status the service answered goes to stdout; an RPC error (no answer) to stderr.
    print(f"{address}: {status}", file=sys.stdout if answered else sys.stderr)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
