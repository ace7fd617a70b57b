"""The per-destination table plan (``streams.output_plan``) against the layouts it reads
(C7, C16, C17: which variant's record holds which field, and in what map order)."""

from __future__ import annotations

import pytest

from streams.batch_inputs import prepare
from streams.output_plan import Constant, FieldColumn, MapColumn, table_plan
from streams.policy import default_policy

pytestmark = pytest.mark.unit

POLICY = default_policy()


@pytest.mark.parametrize("schema", sorted(POLICY.plans))
def test_plan_follows_every_variants_layout(schema: str) -> None:
    """For every destination and every set of variants present: each step is marked in
    exactly the variants whose layout has it, ``everywhere`` only if all of them do, and a
    map's entries keep each variant's own entry order; the plan is made once."""
    prep = prepare(POLICY, schema)
    for dest in prep.plan.dests:
        layouts, out = dest.layouts, prep.outputs[dest.name]
        for mask in range(1, 16):
            variants = tuple(v for v in range(4) if mask >> v & 1)
            plan = table_plan(layouts, variants, out, POLICY.processing_region, POLICY.version)
            assert table_plan(layouts, variants, out, POLICY.processing_region,
                              POLICY.version) is plan
            for i, step in enumerate(plan.steps):
                has = [step in layouts[v].steps for v in variants]
                assert [bool(plan.in_variants[i, v]) for v in variants] == has
                assert plan.everywhere[i] == all(has)
            if plan.columns is None:  # no common entry order: built per variant
                assert len(variants) > 1
                continue
            assert len(plan.columns) == len(layouts[variants[0]].top)
            for column, (name, source, _) in zip(plan.columns, layouts[variants[0]].top,
                                                 strict=True):
                if isinstance(column, MapColumn):
                    target = "a" if source == "attributes" else "m"
                    entries = [plan.steps[i] for i in column.steps]
                    for v in variants:
                        own = [s for s in layouts[v].steps if s.target == target]
                        assert [s for s in entries if s in own] == (
                            [s for s in own if s.always] + [s for s in own if not s.always])
                elif isinstance(column, FieldColumn):
                    assert all(plan.steps[i].out_name == name for i in column.steps)
                else:
                    assert isinstance(column, Constant) and source in (
                        "region", "version", "source")
