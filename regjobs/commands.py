"""Operator commands, above the ledger and the database layer (neither calls up here):

    python -m regjobs.commands upgrade     # or: regjobs db upgrade
    python -m regjobs.commands reencrypt   # or: regjobs db reencrypt
    regjobs releases                       # releases, their jobs and workers
    regjobs jobs upgrade JOB [--to VERSION]

`upgrade` brings the job database's schema up to date, records the release it runs from,
then writes the public view of any job made before views existed (run it once before
starting several API processes; the API runs it at start with REGJOBS_AUTO_MIGRATE).
`reencrypt` is key rotation: it rewrites every stored config with the first key of
REGJOBS_SECRET_KEY, one transaction per job (put a new key first, run it, then drop the old
keys).
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.orm import Session

from regjobs import db, release
from regjobs.ledger import releases, rows, view
from regjobs.settings import get_settings


def upgrade(url: str | None = None) -> int:
    """Create or upgrade the schema to the newest migration, then give every job without
    a view its view (how many got one), and record this code's release (its work queue and
    each step's code: `regjobs jobs upgrade` moves jobs to releases recorded here)."""
    db.migrate(url)
    with Session(db.engine_for(url or get_settings().sqlalchemy_url)) as session:
        published = view.publish_missing_views(session=session)
        releases.remember_release(session=session, release=release.current())
        session.commit()
        return published


def upgrade_job(job_id: str, to_version: str | None = None) -> releases.Upgrade:
    """Move a job to another release (`ledger.releases.upgrade_job`)."""
    return db.transaction(releases.upgrade_job, job_id=job_id, to_version=to_version)


def releases_overview() -> list[releases.ReleaseJobs]:
    with db.read_session() as session:
        return releases.releases_overview(session=session)


def reencrypt() -> tuple[int, int]:
    """Rewrite every stored config with the first secret key: (rewritten, stored)."""
    upgrade()
    with db.read_session() as session:
        job_ids = rows.encrypted_job_ids(session=session)
    changed = sum(db.transaction(rows.reencrypt_config, job_id=job_id) for job_id in job_ids)
    return changed, len(job_ids)


def main(argv: list[str] | None = None) -> int:
    from regjobs.private import restrict_umask

    restrict_umask()
    parser = argparse.ArgumentParser(prog="python -m regjobs.commands", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="bring the job database's schema (and views) up to date")
    sub.add_parser("reencrypt", help="rewrite every stored config with the first secret key")
    args = parser.parse_args(argv)
    if args.command == "upgrade":
        upgrade()
        sys.stdout.write("the job database is up to date\n")
    else:
        changed, stored = reencrypt()
        sys.stdout.write(f"re-encrypted {changed} of {stored} stored config(s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
