"""Warm flow-run processes: a flow run starts in a Python process that has imported Prefect
and the flow already, instead of a new interpreter paying ~1.5 s of CPU for the imports.

**The interface.** The rest of the system knows the warm pool by this module alone, and
calls it only as commands, with one environment variable between them:
- `python -m deployments.warm pool` (`POOL_COMMAND`): the pool, one per worker, beside it
  (`deployments.stack`, `regjobs-warm@.service`), listening on the Unix socket
  `SOCKET_ENV` names, keeping `SIZE_ENV` warm processes waiting;
- `python -m deployments.warm` (`LAUNCH_COMMAND`): the work pool's command for a flow run
  (prefect.yaml), started by Prefect's process worker exactly where it would start `python
  -m prefect.engine`, with the same `SOCKET_ENV` (the worker's environment). With no pool,
  or no warm process free at once, it becomes `python -m prefect.engine` itself (a cold
  start), so the pool is never needed for a flow run to run.

**Inside** (nothing outside this package imports these):
- `pool`: keeps the warm processes waiting and hands one to each launcher that asks. It
  imports Prefect and the flow once and forks each warm process from itself while it is
  single-threaded (Prefect's engine deadlocks in a process forked after its threads started,
  PrefectHQ/prefect#16802); `FORK_ENV=false` spawns each instead. The pool is a pool, not a
  supervisor: a warm process is used once and replaced; the pool itself is kept running by
  whatever runs the worker (the launcher of `make run`, systemd);
- `handover`: the launcher (the work pool's command) and the warm process (`python -m
  deployments.warm serve`), and the socket protocol between them and the pool;
- `prefect_engine`: everything that relies on Prefect's internals (its engine's module
  entry run through `runpy`, `PREFECT__FLOW_ENTRYPOINT`, the settings context, the log and
  event workers' drain). It is the one module a Prefect upgrade can break;
  tests/unit/test_prefect_internals.py checks each thing it relies on, naming it.

Prefect's cancel and crash semantics hold because the worker still sees one process per
flow run, the launcher: signals sent to the launcher (the runner's SIGTERM on cancel) are
passed to the warm process; the launcher exits with the warm process's exit code (137 if it
was killed); and a launcher that dies (SIGKILL) takes its warm process with it at once (the
warm process watches the launcher's connection and kills itself when it closes).
"""

from __future__ import annotations

#: The pool's Unix socket (set by the stack for each worker and what it starts).
SOCKET_ENV = "REGJOBS_WARM_SOCKET"
#: Warm processes a pool keeps waiting.
SIZE_ENV = "REGJOBS_WARM_PROCESSES"
#: "false": each warm process a new interpreter instead of forked from the pool.
FORK_ENV = "REGJOBS_WARM_FORK"
#: The pool's command (after the interpreter).
POOL_COMMAND = ("-m", "deployments.warm", "pool")
#: The work pool's command for a flow run (after the interpreter).
LAUNCH_COMMAND = ("-m", "deployments.warm")
