"""Alembic environment: the URL comes from the caller (regjobs.db.migrate) or settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from regjobs.models import Base
from regjobs.settings import get_settings

url = context.config.attributes.get("url") or get_settings().sqlalchemy_url
connectable = context.config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif connectable is not None:
    context.configure(connection=connectable, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
