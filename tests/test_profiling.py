"""`mgt.profiling`: scope chains from op metadata, and a profile of a small compiled program."""

import jax
import jax.numpy as jnp
import numpy as np

from mgt import profiling
from mgt.profiling import scope, scope_of


def test_scope_of_reads_the_chain_of_registered_scopes():
    scope("attention"), scope("mlp"), scope("transformer"), scope("layers")  # registered by the model anyway
    assert scope_of("jit(f)/while/body/transformer/layers/while/body/attention/dot_general") == \
        "transformer/layers/attention"
    assert scope_of("jit(f)/transpose(jvp(transformer))/layers/mlp/dot_general") == "transformer/layers/mlp [backward]"
    assert scope_of("jit(f)/jvp(transformer)/transformer/layers/add") == "transformer/layers"
    assert scope_of("jit(f)/reduce_sum") == "(unscoped)"
    assert scope_of("") == "(XLA-inserted)"


@jax.jit
def _two_scopes(x, w):
    def body(i, x):
        with scope("test_heavy"):
            x = jnp.tanh(x @ w)
        return x

    x = jax.lax.fori_loop(0, 3, body, x)
    with scope("test_light"):
        return x.sum()


def test_profile_attributes_each_op_and_counts_loop_runs(tmp_path):
    x = jnp.asarray(np.random.RandomState(0).normal(size=(64, 64)), jnp.float32)
    compiled = _two_scopes.lower(x, x).compile()
    names = {op_name for _, op_name in profiling.hlo_instructions(compiled.as_text()).values()}
    assert any("test_heavy" in n for n in names) and any("test_light" in n for n in names)

    result = profiling.profile(lambda: compiled(x, x), compiled, repeats=2, trace_dir=str(tmp_path))
    assert result.repeats == 2 and result.wall_seconds > 0 and result.op_seconds > 0
    assert "test_heavy" in result.by_scope and "test_light" in result.by_scope
    assert np.isclose(sum(result.by_scope.values()), result.op_seconds)
    # per call, the matmul runs once per loop iteration and the sum once; the loop itself is not counted
    heavy = [r for _, opcode, s, _, r in result.top_ops if s == "test_heavy"]
    assert heavy and max(heavy) == 3.0
    assert all(opcode != "while" for _, opcode, _, _, _ in result.top_ops)
    assert list(tmp_path.rglob("*.xplane.pb"))
    text = result.table()
    assert "test_heavy" in text and "wall time per call" in text
    recs = result.records()
    assert {r["scope"] for r in recs} >= {"test_heavy", "(all ops)", "(wall)"}
