"""The XLA options of mgt's training steps: on a CPU, only matrix multiplications go to YNNPACK."""

import re

import jax
import jax.numpy as jnp

from mgt import compile_options


def _ynn_fusion_ops(compiled_text: str) -> list[set[str]]:
    """The opcodes (parameters and bitcasts aside) of every YNNPACK fusion of an optimised HLO text."""
    names = re.findall(r"calls=%([\w.]+),[^\n]*__ynn_fusion", compiled_text)
    bodies = [compiled_text.split(f"\n%{name} ")[1].split("\n}")[0] for name in names]
    return [set(re.findall(r"\} (\w+)\(", body)) - {"parameter", "bitcast"} for body in bodies]


def test_cpu_training_steps_hand_only_dots_to_ynnpack(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    options = compile_options.compiler_options()
    assert options == compile_options.CPU_OPTIONS  # the pinned jaxlib knows the option

    def loss(w, x):  # a head and its softmax cross-entropy: the default also hands YNNPACK the reductions
        logits = x @ w
        return (jax.nn.logsumexp(logits, -1) - logits[..., 0]).mean() + (w * w).sum()

    args = (jnp.ones((64, 240)), jnp.ones((2080, 64)))
    text = jax.jit(jax.value_and_grad(loss), compiler_options=options).lower(*args).compile().as_text()
    fusions = _ynn_fusion_ops(text)
    assert fusions and all("dot" in ops for ops in fusions), fusions

    # a choice of the user's in XLA_FLAGS is left alone
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot,reduce")
    assert compile_options.compiler_options() == {}
