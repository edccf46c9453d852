"""SHA-256 of each original image, indexed: the same image sent twice with the same label is
exported once. Existing rows get theirs computed here.

Revision ID: 0002
Revises: 0001
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BATCH = 500  # rows whose images are held in memory at once


def upgrade() -> None:
    # NOT NULL with a default: SQLite adds such a column in place (no table rebuild).
    op.add_column("feedback", sa.Column("image_sha256", sa.String(64), nullable=False,
                                        server_default=""))
    feedback = sa.table("feedback", sa.column("id", sa.Integer),
                        sa.column("image_png", sa.LargeBinary),
                        sa.column("image_sha256", sa.String))
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(sa.select(feedback.c.id, feedback.c.image_png)
                            .where(feedback.c.id > last).order_by(feedback.c.id)
                            .limit(BATCH)).all()
        if not rows:
            break
        conn.execute(feedback.update().where(feedback.c.id == sa.bindparam("row_id"))
                     .values(image_sha256=sa.bindparam("digest")),
                     [{"row_id": i, "digest": hashlib.sha256(png).hexdigest()}
                      for i, png in rows])
        last = rows[-1][0]
    op.create_index("ix_feedback_image_sha256", "feedback", ["image_sha256"])


def downgrade() -> None:
    raise NotImplementedError("the feedback schema is only ever upgraded")
