"""What the service's users told it: drawings with the digit they meant, in a database.

``digitlab serve --feedback-db PATH|URL`` stores each correction sent to ``POST /api/feedback``;
``digitlab feedback export`` turns them into an image-folder dataset that ``digitlab train
--data-dir`` reads. The database is any that SQLAlchemy supports: a file path is an SQLite
database (WAL mode, a busy timeout and ``BEGIN IMMEDIATE`` for writers, so that several worker
processes can write at once), a URL names another (PostgreSQL for several replicas). Its schema
is versioned by Alembic migrations shipped in ``migrations/`` and upgraded in place when a store
is opened, never dropped.

No torch here: the server hands over the 28x28 image the model saw, this package stores it.
"""

from .images import input_png, stored_png
from .store import (FeedbackDBError, FeedbackStore, NewFeedback, Stats, database_url,
                    export_dataset, open_store)

__all__ = ["FeedbackStore", "FeedbackDBError", "NewFeedback", "Stats", "open_store",
           "database_url", "export_dataset", "stored_png", "input_png"]
