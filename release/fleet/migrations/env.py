"""Alembic's environment: run the revisions on the connection `_schema` hands over (in
`config.attributes["connection"]`), each in a transaction of its own."""

from alembic import context

__all__: list[str] = []

_connection = context.config.attributes["connection"]
context.configure(connection=_connection, target_metadata=None,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
