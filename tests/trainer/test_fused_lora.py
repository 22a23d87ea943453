"""The fused LoRA layer (ftjob_trainer.fused_lora) computes what peft's LoRA layer computes: the same outputs
and the same gradients for the input and both adapter matrices, on a plain linear base and on a 4-bit one
(bitsandbytes nf4 on the CPU), with and without dropout, under gradient checkpointing, and it steps aside
wherever peft's own forward must run (evaluation, no gradients, adapters disabled)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from ftjob_trainer import fused_lora

IN, OUT, R = 48, 40, 8


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(IN, OUT, bias=True)
        self.down = nn.Linear(OUT, IN, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down(torch.relu(self.up(x)))
        return out


def peft_block(dtype: torch.dtype, dropout: float, four_bit: bool = False) -> Any:
    torch.manual_seed(0)
    block = Block().to(dtype)
    if four_bit:
        block = quantise(block, dtype)
    model = get_peft_model(
        block, LoraConfig(r=R, lora_alpha=16, lora_dropout=dropout, target_modules=["up", "down"])
    )
    # peft starts lora_B at zero; a non-zero B makes every gradient term count.
    for name, param in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    return model.train()


def quantise(block: Block, dtype: torch.dtype) -> Block:
    from bitsandbytes.nn.modules import Linear4bit, Params4bit

    for name in ("up", "down"):
        plain: nn.Linear = getattr(block, name)
        layer = Linear4bit(
            plain.in_features,
            plain.out_features,
            bias=plain.bias is not None,
            compute_dtype=dtype,
            quant_type="nf4",
            quant_storage=dtype,
        )
        layer.weight = Params4bit(
            plain.weight.data.clone(),
            requires_grad=False,
            quant_type="nf4",
            compress_statistics=True,
            quant_storage=dtype,
        )._quantize("cpu")
        if plain.bias is not None:
            layer.bias = nn.Parameter(plain.bias.data.clone(), requires_grad=False)
        setattr(block, name, layer)
    return block


def run(model: Any, x: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = model(x)
    (y.float() * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    grads = {"x": x.grad.detach().clone()}  # type: ignore[union-attr]
    for name, param in model.named_parameters():
        if param.requires_grad:
            grads[name] = param.grad.detach().clone()
    return y.detach(), grads


def assert_same(a: Any, b: Any, tol: float) -> None:
    (ya, ga), (yb, gb) = a, b
    assert ga.keys() == gb.keys() and len(ga) == 5  # x and lora_A/lora_B of two layers
    for name, got, expected in [("y", ya, yb), *((n, ga[n], gb[n]) for n in ga)]:
        # Relative to the tensor's scale: bf16 rounds each element to about 3 significant digits.
        error = float((got.double() - expected.double()).abs().max() / expected.double().abs().max())
        assert error <= tol, f"{name}: max error {error:.2e} of the largest element"


@pytest.mark.parametrize(
    ("dtype", "four_bit", "tol"),
    [(torch.float32, False, 1e-6), (torch.bfloat16, True, 2e-2)],
    ids=["fp32-linear", "bf16-nf4"],
)
def test_matches_peft_without_dropout(dtype: torch.dtype, four_bit: bool, tol: float) -> None:
    x = torch.randn(2, 7, IN, dtype=dtype)
    model = peft_block(dtype, 0.0, four_bit)
    expected = run(model, x)
    assert fused_lora.install(model) == 2
    got = run(model, x)
    assert_same(got, expected, tol)
    # Control: a wrong scaling is caught, so the comparison can fail.
    model.base_model.model.up.scaling["default"] *= 2
    wrong = run(model, x)
    assert not torch.allclose(wrong[0].float(), expected[0].float(), atol=tol)


def test_the_four_bit_base_is_dequantised_not_read_raw() -> None:
    model = peft_block(torch.bfloat16, 0.0, four_bit=True)
    up = model.base_model.model.up
    assert fused_lora._is_4bit(up.get_base_layer())
    weight = fused_lora._base_weight(up.get_base_layer(), torch.bfloat16)
    assert weight.shape == (OUT, IN)


def test_matches_peft_with_dropout_mask_for_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """With dropout, the fused layer equals peft's arithmetic applied with the fused layer's own masks
    (the two draw their masks differently, so the reference replays the fused layer's)."""
    x = torch.randn(3, 5, IN, dtype=torch.float64)
    model = peft_block(torch.float64, 0.25)
    fused_lora.install(model)
    got = run(model, x, seed=11)

    masks: list[torch.Tensor] = []
    original = torch.native_dropout

    def recording(t: torch.Tensor, p: float, train: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
        out, mask = original(t, p, train)
        masks.append(mask)
        return out, mask

    monkeypatch.setattr(torch, "native_dropout", recording)
    run(model, x, seed=11)
    monkeypatch.undo()
    assert len(masks) == 2 and 0.5 < float(masks[0].float().mean()) < 0.95

    class Replay(nn.Module):
        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.mask = mask

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t * self.mask.reshape(t.shape) / 0.75

    reference = peft_block(torch.float64, 0.25)
    inner = reference.base_model.model
    inner.up.lora_dropout["default"] = Replay(masks[0])
    inner.down.lora_dropout["default"] = Replay(masks[1])
    assert_same(got, run(reference, x), 1e-12)


def test_gradients_pass_gradcheck_with_dropout() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5).double()
    for param in base.parameters():
        param.requires_grad_(False)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def f(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(5)  # the same mask on every evaluation
        out: torch.Tensor = fused_lora.LoraLinearFunction.apply(x, a, b, base, 1.5, 0.3)
        return out

    assert torch.autograd.gradcheck(f, (x, a, b))


def test_recomputation_under_checkpointing_gives_the_same_gradients() -> None:
    x = torch.randn(2, 6, IN, dtype=torch.float64)
    model = peft_block(torch.float64, 0.1)
    fused_lora.install(model)
    plain = run(model, x, seed=7)

    class Checkpointed(nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = checkpoint(self.inner, t, use_reentrant=False)
            return out

    wrapped = Checkpointed(model)
    got = run(wrapped, x, seed=7)
    torch.testing.assert_close(got[0], plain[0])
    for name, grad in plain[1].items():
        torch.testing.assert_close(got[1][name if name == "x" else f"inner.{name}"], grad, msg=name)


def test_peft_forward_runs_outside_training() -> None:
    model = peft_block(torch.float32, 0.1)
    fused_lora.install(model)
    calls = []
    original = fused_lora.LoraLinearFunction.apply

    def counting(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    fused_lora.LoraLinearFunction.apply = counting  # type: ignore[method-assign]
    try:
        x = torch.randn(2, IN)
        model.train()(x)
        assert len(calls) == 2
        model.eval()(x)
        with torch.no_grad():
            model.train()(x)
        with model.disable_adapter():
            model.train()(x)
        assert len(calls) == 2
    finally:
        fused_lora.LoraLinearFunction.apply = original  # type: ignore[method-assign]


def test_a_copied_model_runs_its_own_layers() -> None:
    """The fused forward falls back to the layer's class, not to the layer it was installed on: a deep copy
    (evaluation or merging on a copy) computes with the copy's weights."""
    import copy

    model = peft_block(torch.float32, 0.0)
    fused_lora.install(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in twin.named_parameters():
            if "lora_B" in name:
                param.mul_(3)
    x = torch.randn(2, IN)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        getattr(twin, mode)()
        with torch.no_grad():
            assert not torch.allclose(model(x), twin(x)), mode


def test_layers_it_cannot_compute_exactly_keep_peft() -> None:
    torch.manual_seed(0)
    dora = get_peft_model(Block(), LoraConfig(r=R, use_dora=True, target_modules=["up", "down"]))
    assert fused_lora.install(dora) == 0
    again = peft_block(torch.float32, 0.0)
    assert fused_lora.install(again) == 2
    assert fused_lora.install(again) == 0  # installing twice wraps nothing twice


def test_a_four_bit_model_trains_in_bf16_through_fused_layers(tmp_path: Any) -> None:
    """The trainer's QLoRA path as it runs on a GPU, here with bitsandbytes' CPU kernels: the model loaded
    in 4 bits (modeling.quantization_kwargs), adapters added (modeling.add_adapters) and fused. The
    embeddings, norms and LM head stay bf16, so every projection reads and writes bf16 (peft's 4-bit preparation made
    all of them fp32), and a step with recomputed layers trains every adapter."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, MistralConfig, MistralForCausalLM

    from ftjob.api.peft import PeftSpec
    from ftjob_trainer.modeling import add_adapters, quantization_kwargs

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=101,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=None,
    )
    plain: Any = MistralForCausalLM(config)
    plain.to(torch.bfloat16).save_pretrained(str(tmp_path))
    spec = PeftSpec()
    # As modeling.load_base_model loads it, on the CPU instead of the process's GPU.
    base = AutoModelForCausalLM.from_pretrained(
        str(tmp_path),
        dtype=torch.bfloat16,
        attn_implementation="sdpa",
        quantization_config=BitsAndBytesConfig(**quantization_kwargs(spec, "bfloat16")),
        device_map={"": "cpu"},
    )
    model = add_adapters(base, spec, gradient_checkpointing=True)
    assert fused_lora.install(model) == 14  # 7 projections x 2 layers
    inner = model.get_base_model()
    assert inner.model.embed_tokens.weight.dtype == torch.bfloat16
    assert inner.model.norm.weight.dtype == torch.bfloat16
    assert inner.lm_head.weight.dtype == torch.bfloat16
    assert fused_lora._is_4bit(inner.model.layers[0].self_attn.q_proj.get_base_layer())

    dtypes: list[torch.dtype] = []
    for layer in inner.model.layers:
        for proj in (layer.self_attn.q_proj, layer.mlp.down_proj):
            proj.register_forward_hook(lambda _m, i, o: dtypes.extend([i[0].dtype, o.dtype]))
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(3, 101, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    lora = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert len(lora) == 28 and all(g is not None for g in lora.values())
    # lora_B starts at zero, so lora_A's gradient is zero on the first step; lora_B's must not be.
    assert all(float(g.abs().sum()) > 0 for n, g in lora.items() if g is not None and "lora_B" in n)


@pytest.mark.parametrize("update", ["fused", "foreach", "copy"])
def test_adapter_casts_follow_every_update_of_the_weights(update: str) -> None:
    """The compute-dtype copy of an adapter weight is made once per update: reused while the weight is
    unchanged, remade after the optimiser's in-place step (fused or foreach AdamW) or a copy into it."""
    from ftjob_trainer.fused_lora import _cast

    weight = torch.nn.Parameter(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    first = _cast(weight, torch.bfloat16)
    assert _cast(weight, torch.bfloat16) is first and _cast(weight, torch.float32) is weight
    if update == "copy":
        with torch.no_grad():
            weight.copy_(weight * 3)
    else:
        optimiser = torch.optim.AdamW([weight], lr=0.5, fused=update == "fused", foreach=update == "foreach")
        weight.grad = torch.ones_like(weight)
        optimiser.step()
    after = _cast(weight, torch.bfloat16)
    assert after is not first and torch.equal(after, weight.detach().to(torch.bfloat16))
    assert not torch.equal(after, first)  # control: the update changed the weight


def test_the_rebuild_path_is_fused_without_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """offload.py's first forward pass runs without a graph but must draw the dropout masks its rebuild
    draws: `fused_without_grad` keeps the fused path there; plain no-grad runs peft's forward."""
    model = peft_block(torch.float32, dropout=0.1)
    fused_lora.install(model)
    model.train()
    calls: list[int] = []
    original = fused_lora.LoraLinearFunction.apply

    def counting(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(fused_lora.LoraLinearFunction, "apply", counting)
    x = torch.randn(3, IN)
    with torch.no_grad():
        model(x)
    assert calls == []
    with torch.no_grad(), fused_lora.fused_without_grad():
        model(x)
    assert len(calls) == 2
    with torch.no_grad():
        model(x)
    assert len(calls) == 2
