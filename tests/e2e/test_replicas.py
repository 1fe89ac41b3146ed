"""Two API processes on one job database and one Prefect server: exactly one reconciler
acts, a dead worker still fails its job in time, and the role moves when its holder dies."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from deployments.stack import Stack, free_port
from regjobs.models import ControlLease
from tests.helpers import (
    effects,
    flow_run_pids,
    hold_step,
    kill_worker,
    steps_by_id,
    wait_for,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.database, pytest.mark.slow]


def health(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/healthz").json())


def test_one_reconciler_among_two_api_processes_and_a_handover(
    stack: Stack,
    api: httpx.Client,
    standin: httpx.Client,
    stack_env: dict[str, str],
    db: Engine,
    restaurant_id: str,
) -> None:
    port = free_port()
    stack.start_api(name="api-b", port=port)
    headers = {"Authorization": f"Bearer {stack_env['REGJOBS_DEV_API_KEY']}"}
    other = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)
    processes = {"api": api, "api-b": other}
    restart_main = False
    try:
        # Exactly one leads; the other stands by and does nothing.
        roles = {name: health(client)["reconciler"] for name, client in processes.items()}
        assert sorted(roles.values()) == ["leader", "standby"], roles
        leader = next(name for name, role in roles.items() if role == "leader")
        standby = next(name for name in processes if name != leader)
        cycles = health(processes[leader])["reconciler_cycles"]
        wait_for(
            lambda: health(processes[leader])["reconciler_cycles"] >= cycles + 3,
            timeout=10,
            what="the leader to run cycles",
        )
        assert health(processes[standby])["reconciler_cycles"] == 0
        with db.connect() as connection:
            holder = connection.execute(
                select(ControlLease.holder).where(ControlLease.name == "reconciler")
            ).scalar_one()
        # The holder names the process that leads: one of the leader's API processes,
        # whose group is the one `api.serve` started.
        assert holder is not None
        holder_pid = int(holder.split(":")[1])
        assert os.getpgid(holder_pid) == stack.children[leader].process.pid, holder

        # A worker killed mid-step: the job fails within 30 s.
        job_id = hold_step(api, standin, restaurant_id, "menu_import", 30)
        flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
        assert flow_run_pids(flow_run_id), "the flow-run process was not found"
        killed = time.monotonic()
        kill_worker(stack, flow_run_id)
        try:
            job = wait_for(
                lambda: (
                    (j := other.get(f"/api/registration-jobs/{job_id}").json())["status"]
                    == "failed"
                    and j
                ),
                timeout=30,
                interval=0.2,
                what="the job to fail",
            )
            print(f"job failed {time.monotonic() - killed:.1f} s after the worker died")
            assert "worker was lost" in steps_by_id(job)["menu_import"]["error_message"]
        finally:
            stack.start_worker()

        # The leader dies: the other takes the role within 10 s, and acts.
        os.killpg(stack.children[leader].process.pid, signal.SIGKILL)
        died = time.monotonic()
        restart_main = leader == "api"
        stack.stop_child(leader)
        wait_for(
            lambda: health(processes[standby])["reconciler"] == "leader",
            timeout=10,
            interval=0.1,
            what="the standby to lead",
        )
        print(f"the reconciler role moved {time.monotonic() - died:.1f} s after its holder died")
        processes[standby].post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
        assert watch_job(processes[standby], job_id).job["status"] == "completed"
        wait_for(
            lambda: all(c["end"] for c in standin.get("/_control/calls").json()),
            timeout=40,
            what="the held menu import to end",
        )
        assert set(effects(standin).values()) == {1}
    finally:
        stack.stop_child("api-b")
        if restart_main:
            stack.start_api()
        other.close()
