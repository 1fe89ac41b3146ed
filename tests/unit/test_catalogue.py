"""Unit tests for the step catalogue and the walk over its graph (regjobs.catalogue)."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from regjobs import catalogue
from regjobs.catalogue import (
    BY_ID,
    DISABLED_REASON,
    FINAL_STEP_STATUSES,
    PHASES,
    STEP_IDS,
    STEPS,
    Plan,
    StepKind,
    StepStatus,
    ancestors,
    dependents,
    walk,
)

P = StepStatus.PENDING
R = StepStatus.RUNNING
C = StepStatus.COMPLETED
F = StepStatus.FAILED
S = StepStatus.SKIPPED
X = StepStatus.CANCELLED

PHASE1 = ("account_registration", "code_generation", "onboarding_user", "image_upload")

# SPEC.md's table: number, step_id, label, phase, needs (by number), kind, switch, timeout (s).
SPEC_TABLE: list[tuple[int, str, str, str, tuple[int, ...], StepKind, str | None, int]] = [
    (1, "account_registration", "Account registration", "phase1", (), StepKind.API,
     "account.register_new_user", 3 * 60),
    (2, "code_generation", "Code generation", "phase1", (), StepKind.API, None, 2 * 60),
    (3, "onboarding_user", "Onboarding user", "phase1", (), StepKind.API,
     "onboarding.create_user", 2 * 60),
    (4, "image_upload", "Image upload", "phase1", (), StepKind.API, "menu.upload_images", 10 * 60),
    (5, "restaurant_registration", "Restaurant registration", "phase2", (1,), StepKind.BROWSER,
     None, 3 * 60),
    (6, "website_configuration", "Website configuration", "phase2", (5, 2), StepKind.BROWSER,
     None, 3 * 60),
    (7, "services_configuration", "Services configuration", "phase2", (5,), StepKind.BROWSER,
     None, 3 * 60),
    (8, "payment_configuration", "Payment configuration", "phase2", (5,), StepKind.BROWSER,
     None, 3 * 60),
    (9, "onboarding_sync", "Onboarding sync", "phase2", (5, 3, 8), StepKind.API,
     "onboarding.sync_record", 2 * 60),
    (10, "menu_import", "Menu import", "phase3", (5, 4), StepKind.BROWSER, "menu.import", 5 * 60),
    (11, "option_sets", "Option sets", "phase3", (10,), StepKind.BROWSER,
     "menu.add_option_sets", 60 * 60),
    (12, "item_tags", "Item tags", "phase4", (11,), StepKind.BROWSER, "menu.add_item_tags",
     10 * 60),
]  # fmt: skip

ID_OF = {row[0]: row[1] for row in SPEC_TABLE}


def statuses(**overrides: StepStatus) -> dict[str, StepStatus]:
    """Every step pending, except the ones given by keyword."""
    result = dict.fromkeys(STEP_IDS, P)
    for sid, status in overrides.items():
        assert sid in result, sid
        result[sid] = status
    return result


def done(*step_ids: str, **overrides: StepStatus) -> dict[str, StepStatus]:
    """The given steps completed, the rest pending (or as overridden)."""
    result = statuses(**overrides)
    for sid in step_ids:
        result[sid] = C
    return result


# --- the table ----------------------------------------------------------------------------


def test_twelve_steps_numbered_one_to_twelve() -> None:
    assert len(STEPS) == 12
    assert [s.number for s in STEPS] == list(range(1, 13))
    assert len(set(STEP_IDS)) == 12
    assert tuple(row[1] for row in SPEC_TABLE) == STEP_IDS


@pytest.mark.parametrize("row", SPEC_TABLE, ids=[row[1] for row in SPEC_TABLE])
def test_step_matches_spec_table(
    row: tuple[int, str, str, str, tuple[int, ...], StepKind, str | None, int],
) -> None:
    number, sid, label, phase, needs, kind, switch, timeout = row
    s = catalogue.step(sid)
    assert s.number == number
    assert s.id == sid
    assert s.label == label
    assert s.phase == phase
    assert set(s.needs) == {ID_OF[n] for n in needs}
    assert len(s.needs) == len(needs)
    assert s.kind is kind
    assert s.switch == switch
    assert s.timeout_seconds == timeout
    assert BY_ID[sid] is s


def test_phases_are_the_four_labels_in_order() -> None:
    assert PHASES == ("phase1", "phase2", "phase3", "phase4")
    assert {s.phase for s in STEPS} == set(PHASES)


def test_unknown_step_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="no_such_step"):
        catalogue.step("no_such_step")


def test_steps_are_in_topological_order() -> None:
    position = {s.id: i for i, s in enumerate(STEPS)}
    for s in STEPS:
        for need in s.needs:
            assert position[need] < position[s.id], f"{s.id} listed before its need {need}"


def test_final_statuses() -> None:
    assert frozenset({C, F, S, X}) == FINAL_STEP_STATUSES
    assert all(st.is_final for st in (C, F, S, X))
    assert not any(st.is_final for st in (P, R, StepStatus.RETRYING))


# --- ancestors / dependents ---------------------------------------------------------------


def test_ancestors_of_root_is_empty() -> None:
    for sid in PHASE1:
        assert ancestors(sid) == frozenset()


def test_ancestors_are_transitive() -> None:
    assert ancestors("restaurant_registration") == {"account_registration"}
    assert ancestors("item_tags") == {
        "option_sets",
        "menu_import",
        "restaurant_registration",
        "image_upload",
        "account_registration",
    }
    assert ancestors("onboarding_sync") == {
        "restaurant_registration",
        "account_registration",
        "onboarding_user",
        "payment_configuration",
    }
    assert ancestors("website_configuration") == {
        "restaurant_registration",
        "account_registration",
        "code_generation",
    }


def test_dependents_are_transitive() -> None:
    assert dependents("item_tags") == frozenset()
    assert dependents("menu_import") == {"option_sets", "item_tags"}
    assert dependents("payment_configuration") == {"onboarding_sync"}
    assert dependents("code_generation") == {"website_configuration"}
    assert dependents("image_upload") == {"menu_import", "option_sets", "item_tags"}
    assert dependents("account_registration") == set(STEP_IDS) - {
        "account_registration",
        "code_generation",
        "onboarding_user",
        "image_upload",
    }


def test_ancestors_and_dependents_are_inverse() -> None:
    for a in STEP_IDS:
        for b in STEP_IDS:
            assert (a in ancestors(b)) == (b in dependents(a)), (a, b)
        assert a not in ancestors(a)
        assert a not in dependents(a)


def test_ancestors_of_unknown_step_raises() -> None:
    with pytest.raises(KeyError, match="nope"):
        ancestors("nope")


# --- walk ---------------------------------------------------------------------------------


def test_walk_at_start_readies_the_four_phase1_steps() -> None:
    plan = walk(statuses())
    assert plan.ready == PHASE1
    assert dict(plan.skipped) == {}
    assert not plan.empty


def test_walk_with_empty_mapping_treats_every_step_as_pending() -> None:
    assert walk({}).ready == PHASE1


def test_plan_empty() -> None:
    assert Plan().empty
    assert not Plan(ready=("code_generation",)).empty
    assert not Plan(skipped={"item_tags": "disabled"}).empty


def test_walk_skips_disabled_steps_with_reason_disabled() -> None:
    plan = walk(statuses(), disabled={"onboarding_user", "image_upload"})
    assert plan.ready == ("account_registration", "code_generation")
    assert dict(plan.skipped) == {"onboarding_user": DISABLED_REASON, "image_upload": "disabled"}


def test_disabled_account_registration_satisfies_restaurant_registration() -> None:
    # Same pass: the disabled step is skipped and its dependent is ready at once.
    plan = walk(statuses(), disabled={"account_registration"})
    assert plan.skipped == {"account_registration": "disabled"}
    assert "restaurant_registration" in plan.ready
    # A later pass, with the skip recorded in the ledger.
    later = walk(
        statuses(account_registration=S),
        disabled={"account_registration"},
        skip_reasons={"account_registration": DISABLED_REASON},
    )
    assert "restaurant_registration" in later.ready
    assert "account_registration" not in later.skipped


def test_step_skipped_for_a_failure_does_not_satisfy_dependents() -> None:
    plan = walk(
        done("code_generation", "onboarding_user", "image_upload", account_registration=S),
        skip_reasons={"account_registration": "not run: something was not completed"},
    )
    assert "restaurant_registration" in plan.skipped
    assert "Account registration" in plan.skipped["restaurant_registration"]
    assert plan.ready == ()


def test_disabled_chain_all_skipped_as_disabled() -> None:
    off = {"menu_import", "option_sets", "item_tags"}
    plan = walk(done(*PHASE1), disabled=off)
    assert dict(plan.skipped) == dict.fromkeys(off, "disabled")
    assert "restaurant_registration" in plan.ready


def test_failed_menu_import_skips_its_chain_and_keeps_other_branches() -> None:
    before = (*PHASE1, "restaurant_registration")
    plan = walk(done(*before, menu_import=F))
    assert set(plan.skipped) == {"option_sets", "item_tags"}
    assert "Menu import" in plan.skipped["option_sets"]
    # item_tags is blocked by option_sets, itself skipped for the failure: the reason
    # names the step that failed, not the one in between.
    assert plan.skipped["item_tags"] == "not run: Menu import failed"
    assert all(reason != DISABLED_REASON for reason in plan.skipped.values())
    assert set(plan.ready) == {
        "website_configuration",
        "services_configuration",
        "payment_configuration",
    }


def test_failed_payment_does_not_stop_the_menu_chain() -> None:
    before = (*PHASE1, "restaurant_registration", "website_configuration")
    plan = walk(done(*before, payment_configuration=F))
    assert set(plan.skipped) == {"onboarding_sync"}
    assert "Payment configuration" in plan.skipped["onboarding_sync"]
    assert set(plan.ready) == {"services_configuration", "menu_import"}


def test_failed_root_skips_everything_that_depends_on_it() -> None:
    plan = walk(done("code_generation", "onboarding_user", "image_upload",
                     account_registration=F))  # fmt: skip
    assert set(plan.skipped) == dependents("account_registration")
    assert "Account registration" in plan.skipped["restaurant_registration"]
    assert plan.ready == ()


def test_disabled_step_does_not_hide_a_failure_behind_it() -> None:
    # menu_import is off, but option_sets still needs what restaurant_registration yields
    # (the subdomain; the ledger hands every ancestor's result to a step). With the
    # restaurant never registered, option_sets must not run.
    plan = walk(done(*PHASE1, restaurant_registration=F), disabled={"menu_import"})
    assert plan.skipped["menu_import"] == DISABLED_REASON
    assert "option_sets" not in plan.ready
    assert "Restaurant registration" in plan.skipped.get("option_sets", "")


def test_cancelled_dependency_also_skips() -> None:
    plan = walk(done(*PHASE1, restaurant_registration=X))
    assert set(plan.skipped) == dependents("restaurant_registration")
    assert "Restaurant registration" in plan.skipped["services_configuration"]
    assert plan.ready == ()


def test_reason_names_every_blocked_dependency() -> None:
    plan = walk(
        done("account_registration", "code_generation", "image_upload",
             restaurant_registration=C, onboarding_user=F, payment_configuration=F)
    )  # fmt: skip
    reason = plan.skipped["onboarding_sync"]
    assert "Onboarding user" in reason
    assert "Payment configuration" in reason
    assert "Restaurant registration" not in reason


def test_only_pending_steps_appear_in_a_plan() -> None:
    current = done(
        "account_registration",
        "restaurant_registration",
        code_generation=R,
        onboarding_user=F,
        image_upload=StepStatus.RETRYING,
        services_configuration=C,
        payment_configuration=X,
    )
    plan = walk(current, disabled=set(STEP_IDS))
    for sid in (*plan.ready, *plan.skipped):
        assert current[sid] is P
    assert set(plan.skipped) == {s for s, st in current.items() if st is P}


def test_website_configuration_needs_both_restaurant_and_code() -> None:
    only_5 = walk(done("account_registration", "restaurant_registration", code_generation=R))
    assert "website_configuration" not in only_5.ready
    assert "website_configuration" not in only_5.skipped
    both = walk(done("account_registration", "restaurant_registration", "code_generation"))
    assert "website_configuration" in both.ready


def test_onboarding_sync_needs_restaurant_onboarding_user_and_payment() -> None:
    base = ("account_registration", "restaurant_registration", "onboarding_user")
    missing_payment = walk(done(*base, payment_configuration=R))
    assert "onboarding_sync" not in missing_payment.ready
    missing_user = walk(
        done("account_registration", "restaurant_registration", "payment_configuration",
             onboarding_user=R)
    )  # fmt: skip
    assert "onboarding_sync" not in missing_user.ready
    assert "onboarding_sync" in walk(done(*base, "payment_configuration")).ready


def test_menu_import_needs_restaurant_and_images() -> None:
    waiting = walk(done("account_registration", "restaurant_registration", image_upload=R))
    assert "menu_import" not in waiting.ready
    assert "menu_import" in walk(done("restaurant_registration", "image_upload",
                                      "account_registration")).ready  # fmt: skip
    images_off = walk(done("account_registration", "restaurant_registration",
                           image_upload=S), skip_reasons={"image_upload": "disabled"})  # fmt: skip
    assert "menu_import" in images_off.ready


def test_running_steps_are_neither_ready_nor_skipped() -> None:
    for status in (R, StepStatus.RETRYING):
        plan = walk(statuses(**dict.fromkeys(PHASE1, status)))
        assert plan.empty
    # Running needs block their dependents without skipping them.
    plan = walk(done(*PHASE1, restaurant_registration=R))
    assert plan.empty


def test_walk_does_not_mutate_its_inputs() -> None:
    current = done(*PHASE1, restaurant_registration=F)
    copy = dict(current)
    reasons: dict[str, str | None] = {}
    walk(current, skip_reasons=reasons)
    assert current == copy
    assert reasons == {}


def _simulate(
    disabled: set[str], fail: Mapping[str, StepStatus] | None = None
) -> tuple[list[str], dict[str, StepStatus], dict[str, str]]:
    """Apply plans until none is left; ready steps end completed (or as `fail` says)."""
    fail = fail or {}
    current = statuses()
    reasons: dict[str, str] = {}
    order: list[str] = []
    for _ in range(len(STEPS) + 1):
        plan = walk(current, disabled, reasons)
        if plan.empty:
            break
        for sid, reason in plan.skipped.items():
            current[sid] = S
            reasons[sid] = reason
        for sid in plan.ready:
            current[sid] = fail.get(sid, C)
            order.append(sid)
    else:
        pytest.fail("the walk did not terminate")
    return order, current, reasons


def test_simulation_completes_every_step_in_graph_order() -> None:
    order, final, reasons = _simulate(set())
    assert all(st is C for st in final.values())
    assert sorted(order) == sorted(STEP_IDS)
    assert reasons == {}
    for sid in order:
        for need in BY_ID[sid].needs:
            assert order.index(need) < order.index(sid)
    # Not phase by phase: restaurant registration does not wait for phase 1 to finish.
    assert order[:4] == list(PHASE1)
    assert order[4] == "restaurant_registration"


def test_simulation_with_failure_skips_only_the_dependents() -> None:
    order, final, reasons = _simulate(set(), {"menu_import": F})
    assert final["menu_import"] is F
    assert "menu_import" in order
    assert "option_sets" not in order and "item_tags" not in order
    assert final["option_sets"] is S and final["item_tags"] is S
    assert "Menu import" in reasons["option_sets"]
    others = set(STEP_IDS) - {"menu_import", "option_sets", "item_tags"}
    assert all(final[s] is C for s in others)


def test_simulation_with_disabled_steps() -> None:
    off = {"account_registration", "onboarding_user", "onboarding_sync", "item_tags"}
    order, final, reasons = _simulate(off)
    assert set(order) == set(STEP_IDS) - off
    assert all(final[s] is S and reasons[s] == "disabled" for s in off)


# --- property: random statuses (seeded; hypothesis is not installed) ------------------------

_ALL = list(StepStatus)


@pytest.mark.parametrize("seed", range(8))
def test_walk_property_random_statuses(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        current = {sid: rng.choice(_ALL) for sid in STEP_IDS}
        disabled = {sid for sid in STEP_IDS if rng.random() < 0.2}
        reasons: dict[str, str | None] = {
            sid: (DISABLED_REASON if rng.random() < 0.5 else "not run: x was not completed")
            for sid, st in current.items()
            if st is S
        }
        plan = walk(current, disabled, reasons)
        # What the walk knows after applying its own skips, in topological order.
        effective = dict(current)
        eff_reasons = dict(reasons)
        for s in STEPS:
            if s.id in plan.skipped:
                effective[s.id] = S
                eff_reasons[s.id] = plan.skipped[s.id]

        def satisfied(
            sid: str,
            eff: Mapping[str, StepStatus] = effective,
            why: Mapping[str, str | None] = eff_reasons,
        ) -> bool:
            return eff[sid] is C or (eff[sid] is S and why.get(sid) == DISABLED_REASON)

        def blocked(
            sid: str,
            eff: Mapping[str, StepStatus] = effective,
            why: Mapping[str, str | None] = eff_reasons,
        ) -> bool:
            return eff[sid] in (F, X) or (eff[sid] is S and why.get(sid) != DISABLED_REASON)

        assert not set(plan.ready) & set(plan.skipped)
        for sid in plan.ready:
            assert current[sid] is P
            assert sid not in disabled
            assert all(satisfied(n) for n in BY_ID[sid].needs), (sid, current)
        for sid, reason in plan.skipped.items():
            assert current[sid] is P
            if sid in disabled:
                assert reason == DISABLED_REASON
            else:
                # Blocked by a need, or (through a disabled need) by a step further up.
                assert any(blocked(a) for a in ancestors(sid)), (sid, current)
                assert reason.startswith("not run: ")
        # Completeness: a pending step that is not in the plan is waiting on something.
        for sid in STEP_IDS:
            if current[sid] is P and sid not in plan.ready and sid not in plan.skipped:
                assert not any(blocked(n) for n in BY_ID[sid].needs), (sid, current)
                assert any(not effective[a].is_final for a in ancestors(sid)), (sid, current)
