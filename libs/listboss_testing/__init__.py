"""Test support for every ListBoss test (not shipped in any service's runtime path).

- :mod:`listboss_testing.fixtures`: the pytest fixtures (nats-server, NATS client, PostgreSQL
  and SQLite databases, migrated engines, real gRPC servers on port 0), loaded as a plugin by the
  repository's conftest.py;
- :mod:`listboss_testing.polling`: ``eventually`` (async) and ``eventually_sync``;
- :mod:`listboss_testing.grpc_servers`: the real-gRPC-server helper behind the ``grpc_server`` fixture;
- :mod:`listboss_testing.tokens`: ``token``, ``bearer`` (read or write scope), ``jwks_file``, ``auth_env``,
  ``signing_key``: one Ed25519 key per test session;
- :mod:`listboss_testing.rich_errors`: ``rich_status``, ``violated_fields``, ``refused_fields``;
- :mod:`listboss_testing.events`: ``make_event``, a purchase approval as a client would send it;
- :mod:`listboss_testing.streams`: ``event_messages``, ``stored_events`` (what LISTBOSS_EVENTS holds);
- :mod:`listboss_testing.personal_data`: the session's ``LISTBOSS_DATA_KEY`` (``data_key_env``) and
  the ``person_keys`` fixture's keyring.

What tests import besides the fixtures is re-exported here.
"""

from listboss_common.processes import NatsServer, free_port
from listboss_testing.events import make_event
from listboss_testing.fixtures import POSTGRES_ADMIN_URL
from listboss_testing.grpc_servers import Served, binding
from listboss_testing.polling import eventually, eventually_sync
from listboss_testing.rich_errors import refused_fields, rich_status, violated_fields
from listboss_testing.streams import event_messages, stored_events
from listboss_testing.tokens import auth_env, bearer, jwks_file, signing_key, token

__all__ = [
    "POSTGRES_ADMIN_URL",
    "NatsServer",
    "Served",
    "auth_env",
    "bearer",
    "binding",
    "event_messages",
    "eventually",
    "eventually_sync",
    "free_port",
    "jwks_file",
    "make_event",
    "refused_fields",
    "rich_status",
    "signing_key",
    "stored_events",
    "token",
    "violated_fields",
]
