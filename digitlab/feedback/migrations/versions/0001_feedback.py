"""The feedback table: original image, the 28x28 the model saw, label, prediction, model id.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("predicted", sa.SmallInteger, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("image_png", sa.LargeBinary, nullable=False),
        sa.Column("input_png", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("label >= 0 AND label <= 9", name="ck_feedback_label"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    raise NotImplementedError("the feedback schema is only ever upgraded: export the data "
                              "first (digitlab feedback export) if you need to start over")
