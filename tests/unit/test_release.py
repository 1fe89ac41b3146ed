"""Release identity: the version of a checkout (dirty marker included), each step's code
fingerprint, the implicit release of a folder that is no release, and queue names."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deployments.release import describe, version_of
from regjobs import release
from regjobs.catalogue import STEP_IDS
from regjobs.settings import PROJECT_DIR


def _git(repo: Path, *args: str) -> str:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run([*git, *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding the project's step handlers, one commit."""
    folder = tmp_path / "repo"
    (folder / "tasks").mkdir(parents=True)
    shutil.copy(PROJECT_DIR / release.HANDLERS_FILE, folder / release.HANDLERS_FILE)
    _git(folder, "init", "-q")
    _git(folder, "add", ".")
    _git(folder, "commit", "-qm", "one")
    return folder


def test_a_checkout_s_version_is_its_commit_and_uncommitted_changes_are_marked(
    repo: Path,
) -> None:
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert version_of(repo, "HEAD", working_tree=False) == (head[:12], head, head)
    # Clean: --working-tree changes nothing.
    assert version_of(repo, "HEAD", working_tree=True)[0] == head[:12]
    handlers = repo / release.HANDLERS_FILE
    handlers.write_text(handlers.read_text() + "\n# an edit\n")
    version, commit, tree = version_of(repo, "HEAD", working_tree=True)
    assert version.startswith(f"{head[:12]}-dirty.") and commit == head and tree != head
    assert release.valid_version(version)
    # Two different edits of the same commit are two versions (a release is made once).
    handlers.write_text(handlers.read_text() + "\n# another\n")
    assert version_of(repo, "HEAD", working_tree=True)[0] != version
    # Without --working-tree the edits are not in the release: the commit's version.
    assert version_of(repo, "HEAD", working_tree=False)[0] == head[:12]


def test_a_step_s_fingerprint_changes_with_its_handler_alone(repo: Path) -> None:
    before = release.fingerprints(repo)
    assert set(before) == set(STEP_IDS)
    handlers = repo / release.HANDLERS_FILE
    source = handlers.read_text()
    line = "    return await ctx.clients.portal.add_item_tags("
    assert line in source
    handlers.write_text(source.replace(line, "    print('changed')\n" + line))
    after = release.fingerprints(repo)
    assert release.changed_steps(before, after) == ["item_tags"]
    assert release.changed_steps({}, after) == list(STEP_IDS)  # unknown: all changed


def test_a_folder_is_a_release_only_with_its_release_file(tmp_path: Path) -> None:
    assert release.read(tmp_path).version == release.IMPLICIT
    assert release.current().version == release.IMPLICIT  # the tests run a checkout
    assert release.queue_for(release.IMPLICIT) == "default"
    (tmp_path / release.RELEASE_FILE).write_text(
        json.dumps({"version": "0123456789ab", "commit": "0123456789ab" + "0" * 28})
    )
    made = release.read(tmp_path)
    assert (made.version, made.queue) == ("0123456789ab", "release-0123456789ab")
    assert release.version_of_queue(made.queue) == made.version
    assert release.version_of_queue("default") == release.IMPLICIT
    (tmp_path / release.RELEASE_FILE).write_text(json.dumps({"version": "../x y"}))
    with pytest.raises(ValueError, match="not a release version"):
        release.read(tmp_path)


def test_prefect_deploy_s_build_step_describes_the_folder_it_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PROJECT_DIR)
    assert describe() == {"version": "dev", "queue": "default"}
    (tmp_path / release.RELEASE_FILE).write_text(json.dumps({"version": "abcdef012345"}))
    monkeypatch.chdir(tmp_path)
    assert describe() == {"version": "abcdef012345", "queue": "release-abcdef012345"}


def test_the_waiting_reason_names_the_release_and_the_way_out() -> None:
    text = release.no_live_worker("job-1", "release-abcdef012345", 30, ever=True)
    assert "release abcdef012345" in text and "over 30 s" in text
    assert "regjobs jobs upgrade job-1" in text
    assert "no worker polls it" in release.no_live_worker("job-1", "default", 30, ever=False)
