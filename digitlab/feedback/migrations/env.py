"""Alembic's environment for the feedback database.

Migrations run only through ``digitlab.feedback.store.migrate`` (called whenever a store is
opened: ``digitlab serve --feedback-db``, ``digitlab feedback ...``), which hands over a
connection already in a transaction and holding the migration lock; nothing here connects.

To change the schema: add ``versions/NNNN_<what>.py`` with ``revision = "NNNN"`` and
``down_revision`` the previous one, write ``upgrade()`` so that it keeps every row (add columns
with a server default, fill them from the existing data), change ``store.Feedback`` to match,
and add the old revision to the upgrade test in tests/test_feedback.py.
"""

from alembic import context

from digitlab.feedback.store import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the feedback migrations run through digitlab.feedback.store.migrate, "
                       "which passes them a connection")
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
