"""Each service database's Alembic revision against the newest one this code knows
(``listboss-ops migrations status``). Services migrate themselves on start; a database
behind head means a service of this version has not started on it yet, one at a revision
this code does not know was migrated by a newer release."""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from listboss_common.migrations import Environment
from listboss_contacts.schema import ALEMBIC as CONTACTS
from listboss_segmentation.schema import ALEMBIC as SEGMENTATION
from listboss_tools.ops_targets import TargetError, read_engine, safe_url

ENVIRONMENTS: dict[str, Environment] = {"segmentation": SEGMENTATION, "contacts": CONTACTS}


def status(service: str, url: str) -> dict:
    """``state``: at-head, behind (``pending`` lists the revisions to run, oldest first),
    not-migrated (no version table), unknown-revision, or unreadable (``error``)."""
    environment = ENVIRONMENTS[service]
    head = environment.head()
    found: dict[str, Any] = {
        "service": service,
        "database": safe_url(url),
        "version_table": environment.version_table,
        "current": None,
        "head": head,
        "pending": [],
        "state": "unreadable",
        "error": None,
    }
    try:
        engine = read_engine(url)
    except TargetError as error:
        found["error"] = str(error)
        return found
    try:
        with engine.connect() as connection:
            current = environment.current(connection)
    except Exception as error:
        found["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return found
    finally:
        engine.dispose()
    found["current"] = current
    script = ScriptDirectory.from_config(environment.config())
    if current == head:
        found["state"] = "at-head"
    elif current is None:
        found["state"] = "not-migrated"
        found["pending"] = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    else:
        try:
            pending = list(script.iterate_revisions(head, current))
        except CommandError:
            found["state"] = "unknown-revision"
            found["error"] = f"revision {current} is not one of this code's (a newer release migrated it?)"
        else:
            found["state"] = "behind"
            found["pending"] = [rev.revision for rev in reversed(pending)]
    return found
