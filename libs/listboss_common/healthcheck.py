"""``python -m listboss_common.healthcheck HOST:PORT`` exits 0 when the service answers SERVING.

Used by docker-compose health checks, where no grpcurl is at hand.
"""

from __future__ import annotations

import sys

from grpc_health.v1 import health_pb2

from listboss_common.processes import health_status


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    status = health_status(address, timeout=3)
    answered = status in health_pb2.HealthCheckResponse.ServingStatus.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    # A status the service answered goes to stdout; an RPC error (no answer) to stderr.
    print(f"{address}: {status}", file=sys.stdout if answered else sys.stderr)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
