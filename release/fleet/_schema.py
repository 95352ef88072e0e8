"""The collector's schema: versioned by Alembic (`migrations/`), migrated by `release collector
migrate`, and checked by every collector before it serves.

A collector serves a database at its own revision. An empty database is made at it (the
embedded SQLite default needs no step). A database at an older revision, or one an
unversioned collector made, is refused in one line until it is migrated; so is one at a newer
revision, unless that revision still lets this collector's revision serve it (`schema_readers`
names the oldest revision that may: every revision so far only adds, so during a rolling
upgrade the replicas not yet upgraded go on serving the migrated database).

Migrations on PostgreSQL run under an advisory lock: replicas started at once migrate once."""

from pathlib import Path
from typing import Any

from greenlight.release._errors import Conflict

__all__ = ["HEAD", "current", "known", "migrate", "served"]

HEAD = "0003"
"""the revision this collector serves"""
_BASELINE = "0001"  # what an unversioned collector's reports table is stamped as
_MIGRATING = 4242002  # PostgreSQL advisory lock: one migration at a time


def _config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def known() -> list[str]:
    """The revisions this collector knows, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config(None))
    return [s.revision for s in reversed(list(scripts.walk_revisions()))]


def current(engine: Any) -> str | None:
    """The database's revision: None for an empty database, "unversioned" for one a
    collector made before the schema was versioned."""
    import sqlalchemy as sa
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as c:
        revision = MigrationContext.configure(c).get_current_revision()
        if revision is None and sa.inspect(c).has_table("reports"):
            return "unversioned"
    return revision


def _readers(engine: Any) -> str | None:
    import sqlalchemy as sa

    with engine.connect() as c:
        if not sa.inspect(c).has_table("schema_readers"):
            return None
        oldest = c.execute(sa.text("SELECT oldest FROM schema_readers")).scalar()
    return None if oldest is None else str(oldest)


def migrate(engine: Any) -> tuple[str | None, str]:
    """Bring the database to `HEAD`: the revision it was at (as `current` says) and the one it
    is at now.

    Raises:
        Conflict: the database is at a revision this collector does not know (newer).
    """
    import sqlalchemy as sa
    from alembic import command

    before = current(engine)
    if before not in (None, "unversioned", *known()):
        raise Conflict(f"the database's schema is at revision {before}, newer than this "
                       f"collector knows ({HEAD}): migrate it with the newer collector")
    with engine.begin() as c:
        if engine.dialect.name == "postgresql":  # held until this transaction ends
            c.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATING})"))
        config = _config(c)
        if _current_on(c) is None and sa.inspect(c).has_table("reports"):
            command.stamp(config, _BASELINE)
        command.upgrade(config, "head")
    return before, HEAD


def _current_on(connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    revision: str | None = MigrationContext.configure(connection).get_current_revision()
    return revision


def served(engine: Any, url: str) -> str:
    """Make an empty database at `HEAD`; check that this collector may serve any other.
    What to say about it, in one line ("" when nothing is worth saying).

    Raises:
        Conflict: the database's schema is older than this collector's, unversioned, or newer
            than it may serve: one line saying what to do.
    """
    revision = current(engine)
    if revision is None:
        migrate(engine)
        return ""
    if revision == HEAD:
        return ""
    shown = _safe(url)
    if revision == "unversioned" or revision in known():
        what = ("was made by a collector before the schema was versioned"
                if revision == "unversioned" else f"is at revision {revision}")
        raise Conflict(f"the database's schema {what}; this collector serves {HEAD}: run "
                       f"release collector migrate --db {shown}")
    oldest = _readers(engine)
    if oldest is not None and oldest in known():
        return (f"the database's schema is at revision {revision}, newer than this "
                f"collector's {HEAD}, which it still serves (from {oldest} on): upgrade this "
                "collector")
    raise Conflict(f"the database's schema is at revision {revision}, newer than this "
                   f"collector ({HEAD}) may serve: upgrade this collector")


def _safe(url: str) -> str:
    """The database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "URL"
