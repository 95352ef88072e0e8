"""The collector's schema, versioned and migrated by Alembic (`release collector migrate`;
`greenlight.release.fleet._schema` runs it). `env.py` runs the revisions in `versions/` on
the connection it is given; each revision is written so that it also completes a database an
unversioned collector made, whatever columns it had already added: it adds only what is
missing. Every revision so far only adds (tables, nullable columns, indexes), so the
collectors of the revision before it go on serving while the next is rolled out."""

__all__: list[str] = []
