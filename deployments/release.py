"""Make a release, deploy it, run its workers (README, "Redeploying while jobs run").

    python -m deployments.release make [--source DIR] [--commit REF] [--root DIR]
                                       [--working-tree] [--base-env ENV]
    python -m deployments.release worker [--name NAME] [--limit N]   # from the release
    python -m deployments.release describe                           # prefect.yaml's build

`make` exports one commit of a git checkout (`git archive`: nothing uncommitted, nothing
ignored) into `<root>/<version>`, the version being the commit's first 12 hex digits, gives
it its own virtual environment, writes `RELEASE.json` and records the release in the job
database (`regjobs db upgrade` from it). The folder is built beside and renamed into place at
the end, so a half-made release is never one; an existing one is never made again.
`--working-tree` takes the checkout's uncommitted changes too (`git stash create`): the
version is then `<commit>-dirty.<hash of the changes>`.

The environment: by default its own, `pip install -e` of the release (its dependencies from
pip's cache and wheels; ~50-70 s on the 2 shared cores measured). `--base-env ENV` instead
layers it over an existing environment's packages (a `.pth` file; ~2 s): the release's
own code first, the dependencies read from ENV, which must then stay as it is while the
release is in use (tests and quick trials; production makes its own).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from regjobs import release as releases
from regjobs.release import RELEASE_FILE, Release


def own_env() -> dict[str, str]:
    """This environment for a release's own processes: without PYTHONPATH (or PYTHONHOME),
    which would put another checkout's code before the release's."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def describe() -> dict[str, str]:
    """prefect.yaml's build step: the version and work queue of the release `prefect
    deploy` runs in (the deployment's `version` and `work_queue_name`)."""
    here = releases.read(Path.cwd())
    return {"version": here.version, "queue": here.queue}


def _git(source: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(source), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def version_of(source: Path, commit: str, working_tree: bool) -> tuple[str, str, str]:
    """(version, the commit, the tree-ish to export) of a checkout."""
    sha = _git(source, "rev-parse", "--verify", f"{commit}^{{commit}}")
    if not working_tree:
        return sha[:12], sha, sha
    stash = _git(source, "stash", "create")  # the working tree as a commit; "" if clean
    if not stash:
        return sha[:12], sha, sha
    changes = hashlib.sha256(_git(source, "diff", sha, stash).encode()).hexdigest()[:8]
    return f"{sha[:12]}-dirty.{changes}", sha, stash


def make(
    source: Path, commit: str, root: Path, *, working_tree: bool, base_env: Path | None
) -> Release:
    version, sha, tree = version_of(source, commit, working_tree)
    folder = root / version
    if folder.exists():
        raise SystemExit(f"release {version} exists already at {folder}: a release is made once")
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".making-{version}-", dir=root))
    try:
        archive = subprocess.run(
            ["git", "-C", str(source), "archive", "--format=tar", tree],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(building, filter="data")
        made_at = datetime.now(UTC).isoformat(timespec="seconds")
        (building / RELEASE_FILE).write_text(
            json.dumps({"version": version, "commit": sha, "made_at": made_at}, indent=2) + "\n"
        )
        # The venv is made where it will live: its scripts name their interpreter by path.
        building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    try:
        _environment(folder, base_env)
        python = str(folder / ".venv" / "bin" / "python")
        seen = subprocess.run(
            [python, "-c", "from regjobs import release; print(release.current().version)"],
            cwd="/",
            env=own_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if seen != version:
            raise RuntimeError(f"the release's environment runs release {seen!r}, not {version}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return releases.read(folder)


def _environment(folder: Path, base_env: Path | None) -> None:
    venv = folder / ".venv"
    if base_env is None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], env=own_env(), check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "-e", f"{folder}[production]"],
            env=own_env(),
            check=True,
        )
        return
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], env=own_env(), check=True
    )
    base_site = _purelib(base_env / "bin" / "python")
    site = Path(_purelib(venv / "bin" / "python"))
    # Read in name order: the release's own code first, then the base's packages (whose
    # own .pth files, an editable install of another checkout among them, are not read).
    (site / "00-regjobs-release.pth").write_text(f"{folder}\n")
    (site / "10-regjobs-base.pth").write_text(f"{base_site}\n")
    # The base's console scripts (prefect, regjobs, ...) with this environment's python.
    for script in (base_env / "bin").iterdir():
        target = venv / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        try:
            first, rest = script.read_text().split("\n", 1)
        except (UnicodeDecodeError, ValueError):
            continue
        if first.startswith(f"#!{base_env}/bin/python"):
            target.write_text(f"#!{venv / 'bin' / 'python'}\n{rest}")
            target.chmod(0o755)


def _purelib(python: Path) -> str:
    """An environment's site-packages, as its own interpreter has it."""
    asked = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run(
        [str(python), "-c", asked], env=own_env(), capture_output=True, text=True, check=True
    ).stdout.strip()


def worker(name: str | None, limit: int) -> None:
    """Become this release's worker: `prefect worker start` on the release's work queue
    only, named `<name>@<version>` (`regjobs releases` finds it by that), its flow runs
    entering this release's folder (REGJOBS_PROJECT_DIR) with its environment first on PATH."""
    here = releases.current()
    if here.implicit:
        raise SystemExit("not a release: run this from a release's folder (its .venv/bin/python)")
    bin_dir = here.folder / ".venv" / "bin"
    env = {
        **own_env(),
        "REGJOBS_PROJECT_DIR": str(here.folder),
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
    }
    from regjobs.settings import get_settings

    args = [
        str(bin_dir / "python"), "-m", "prefect", "worker", "start",
        "--pool", get_settings().work_pool, "--type", "process",
        "--work-queue", here.queue,
        "--name", f"{name or socket.gethostname()}@{here.version}",
        *(["--limit", str(limit)] if limit else []),
    ]  # fmt: skip
    os.chdir(here.folder)
    os.execve(args[0], args, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.release", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("make", help="make a release folder from a commit")
    made.add_argument("--source", type=Path, default=Path.cwd(), help="a git checkout")
    made.add_argument("--commit", default="HEAD")
    made.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("REGJOBS_RELEASES_DIR", "/opt/registration-jobs/releases")),
        help="where releases live (REGJOBS_RELEASES_DIR)",
    )
    made.add_argument("--working-tree", action="store_true", help="with uncommitted changes")
    made.add_argument("--base-env", type=Path, help="layer over this environment's packages")
    made.add_argument("--no-register", action="store_true", help="skip `regjobs db upgrade`")
    work = sub.add_parser("worker", help="start this release's worker")
    work.add_argument("--name")
    work.add_argument("--limit", type=int, default=4)
    sub.add_parser("describe", help="this folder's release version and work queue (JSON)")
    args = parser.parse_args(argv)
    if args.command == "describe":
        sys.stdout.write(json.dumps(describe()) + "\n")
        return 0
    if args.command == "worker":
        worker(args.name, args.limit)
        return 0
    started = time.monotonic()
    done = make(
        args.source.resolve(),
        args.commit,
        args.root.resolve(),
        working_tree=args.working_tree,
        base_env=args.base_env.resolve() if args.base_env else None,
    )
    took = time.monotonic() - started
    python = done.folder / ".venv" / "bin" / "python"
    if not args.no_register:
        # The schema, and the release recorded with each step's code (`jobs upgrade`).
        # In the release's folder: `-m` puts the working folder first on sys.path.
        subprocess.run(
            [str(python), "-m", "regjobs.commands", "upgrade"],
            cwd=done.folder,
            env=own_env(),
            check=True,
        )
    sys.stdout.write(
        f"release {done.version} made in {took:.1f} s at {done.folder}\n"
        f"deploy it:        cd {done.folder} && .venv/bin/prefect --no-prompt deploy --all\n"
        f"start its worker: {python} -m deployments.release worker\n"
        f"drain the old:    regjobs releases (stop a release's workers once it has no jobs)\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
