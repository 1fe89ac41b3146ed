"""Organisations and their API keys (stored hashed), and the command that manages them.

python -m regjobs.auth create --organisation acme [--label ci]
python -m regjobs.auth revoke rj_AbCdEf12
python -m regjobs.auth list
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from regjobs.crypto import hash_api_key, new_api_key
from regjobs.db import migrate, session_scope
from regjobs.models import ApiKey, Organisation, utcnow

PREFIX_LENGTH = 11


def ensure_organisation(session: Session, name: str) -> Organisation:
    org = session.scalars(select(Organisation).where(Organisation.name == name)).one_or_none()
    if org is None:
        org = Organisation(name=name)
        session.add(org)
        session.flush()
    return org


def add_key(
    session: Session,
    *,
    organisation: Organisation,
    key: str | None = None,
    label: str | None = None,
) -> str:
    """Store a key (a new random one unless given) for the organisation; returns it in clear."""
    key = key or new_api_key()
    digest = hash_api_key(key)
    existing = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).one_or_none()
    if existing is None:
        session.add(
            ApiKey(
                organisation_id=organisation.id,
                key_hash=digest,
                prefix=key[:PREFIX_LENGTH],
                label=label,
            )
        )
        session.flush()
    elif existing.organisation_id != organisation.id:
        raise ValueError("that key already belongs to another organisation")
    return key


def revoke_key(session: Session, *, prefix: str) -> int:
    keys = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix[:PREFIX_LENGTH], ApiKey.revoked_at.is_(None))
    ).all()
    for key in keys:
        key.revoked_at = utcnow()
    return len(keys)


def authenticate(session: Session, key: str) -> Organisation | None:
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return row.organisation if row else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regjobs.auth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create an API key for an organisation")
    create.add_argument("--organisation", required=True)
    create.add_argument("--label")
    revoke = sub.add_parser("revoke", help="revoke a key by its first characters")
    revoke.add_argument("prefix")
    sub.add_parser("list", help="list keys (prefixes only)")
    args = parser.parse_args(argv)
    migrate()
    with session_scope() as session:
        if args.command == "create":
            org = ensure_organisation(session, args.organisation)
            sys.stdout.write(add_key(session, organisation=org, label=args.label) + "\n")
        elif args.command == "revoke":
            count = revoke_key(session, prefix=args.prefix)
            sys.stdout.write(f"revoked {count} key(s)\n")
            return 0 if count else 1
        else:
            for key, org in session.execute(
                select(ApiKey, Organisation).join(Organisation).order_by(ApiKey.created_at)
            ).tuples():
                state = "revoked" if key.revoked_at else "active"
                sys.stdout.write(f"{key.prefix}…\t{org.name}\t{state}\t{key.label or ''}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
