"""Organisations and their API keys (stored hashed), and the command that manages them.

python -m regjobs.auth create --organisation acme [--label ci]
python -m regjobs.auth revoke rj_AbCdEf12
python -m regjobs.auth list
python -m regjobs.auth disable-development-keys

Development keys (label "development", made by the API in development for the demo
organisation) open nothing in production, and the API refuses to start in production while
one is active: `disable-development-keys` revokes them all.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from regjobs.crypto import hash_api_key, new_api_key
from regjobs.db import migrate, session_scope
from regjobs.models import ApiKey, Organisation, utcnow
from regjobs.settings import Environment, get_settings

PREFIX_LENGTH = 11
#: The label of development keys (reserved: `create` refuses it).
DEVELOPMENT_LABEL = "development"
DISABLE_DEVELOPMENT_KEYS = "python -m regjobs.auth disable-development-keys"


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


def active_development_keys(session: Session) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.label == DEVELOPMENT_LABEL, ApiKey.revoked_at.is_(None))
        )
    )


def disable_development_keys(session: Session) -> int:
    """Revoke every development key; how many were active."""
    keys = active_development_keys(session)
    for key in keys:
        key.revoked_at = utcnow()
    return len(keys)


def authenticate(session: Session, key: str) -> Organisation | None:
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    if row.label == DEVELOPMENT_LABEL and get_settings().environment is Environment.PRODUCTION:
        return None
    return row.organisation


def main(argv: list[str] | None = None) -> int:
    from regjobs.private import restrict_umask

    restrict_umask()
    parser = argparse.ArgumentParser(prog="python -m regjobs.auth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create an API key for an organisation")
    create.add_argument("--organisation", required=True)
    create.add_argument("--label")
    revoke = sub.add_parser("revoke", help="revoke a key by its first characters")
    revoke.add_argument("prefix")
    sub.add_parser("list", help="list keys (prefixes only)")
    sub.add_parser(
        "disable-development-keys",
        help="revoke every development key (needed before the API starts in production)",
    )
    args = parser.parse_args(argv)
    if args.command == "create" and args.label == DEVELOPMENT_LABEL:
        parser.error(f"the label {DEVELOPMENT_LABEL!r} is reserved for development keys")
    migrate()
    with session_scope() as session:
        if args.command == "create":
            org = ensure_organisation(session, args.organisation)
            sys.stdout.write(add_key(session, organisation=org, label=args.label) + "\n")
        elif args.command == "revoke":
            count = revoke_key(session, prefix=args.prefix)
            sys.stdout.write(f"revoked {count} key(s)\n")
            return 0 if count else 1
        elif args.command == "disable-development-keys":
            count = disable_development_keys(session)
            sys.stdout.write(f"disabled {count} development key(s)\n")
        else:
            for key, org in session.execute(
                select(ApiKey, Organisation).join(Organisation).order_by(ApiKey.created_at)
            ).tuples():
                state = "revoked" if key.revoked_at else "active"
                sys.stdout.write(f"{key.prefix}…\t{org.name}\t{state}\t{key.label or ''}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
