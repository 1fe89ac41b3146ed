"""Telling a Chromium browser from its helpers (deployments.pids), on a real Chromium: the
browser limit's every count (the launcher, the slot-race test, the test hosts) rests on it."""

from __future__ import annotations

import os

from playwright.sync_api import sync_playwright

from deployments.pids import _parent, browser_processes, chromium_processes
from regjobs.settings import get_settings
from tasks.browser import CHROMIUM_ARGS


def _own_descendants() -> list[int]:
    """This process's descendants (its Playwright driver, that driver's Chromium): not the
    Chromium of tests running beside it in other processes."""
    children: dict[int, list[int]] = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        children.setdefault(_parent(pid), []).append(pid)
    found, todo = [], [os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def test_one_browser_is_one_main_process_whatever_its_helpers() -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=get_settings().chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            browser.new_page().goto("about:blank")
            chromium = set(chromium_processes(_own_descendants()))
            found = set(browser_processes(chromium))
            assert len(found) == 1, found
            # Every other Chromium process is a helper with `--type=` (zygotes, renderers,
            # GPU, utilities): none is counted, whoever its parent is.
            assert chromium - found
        finally:
            browser.close()
