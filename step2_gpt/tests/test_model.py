"""Unit tests of the step-2 GPT: the invariants the lesson claims (验证标准)."""
import math

import pytest
import torch
import torch.nn.functional as F

from common.errors import CourseError
from step2_gpt.model import GPT, GPTConfig, KVCache, PRESETS, apply_rope, param_count_formula, rope_tables


def small_cfg(**kw):
    """A few-layer model that runs in milliseconds."""
    base = dict(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=32)
    return GPTConfig(**{**base, **kw})


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(small_cfg(**kw)).eval()


def test_causality_future_tokens_do_not_change_past_logits():
    model = make()
    idx = torch.randint(0, 97, (2, 20))
    changed = idx.clone()
    changed[:, 12:] = torch.randint(0, 97, (2, 8))
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("n_kv_head,qk_norm", [(4, False), (2, False), (1, True)])
def test_kv_cache_logits_equal_full_forward_step_by_step(n_kv_head, qk_norm):
    model = make(n_kv_head=n_kv_head, qk_norm=qk_norm)
    idx = torch.randint(0, 97, (2, 24))
    full, _ = model(idx)                                   # (B, T, V)
    cache = KVCache(model.config)
    pieces = [model(idx[:, :6], kv_cache=cache)[0], model(idx[:, 6:10], kv_cache=cache)[0]]  # prefill, then a chunk
    for t in range(10, 24):                                # then one token at a time
        pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert cache.pos == 24
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_generate_with_and_without_cache_gives_the_same_tokens():
    model = make(n_kv_head=2)
    prompt = torch.randint(0, 97, (1, 5))
    a = model.generate(prompt, max_new_tokens=30, temperature=0)
    b = model.generate(prompt, max_new_tokens=30, temperature=0, use_cache=False)
    assert a.shape == (1, 30) and torch.equal(a, b)


def test_rope_depends_only_on_relative_position():
    hd = 16
    cos, sin = rope_tables(hd, 64, 10000.0)
    torch.manual_seed(0)
    q, k = torch.randn(hd), torch.randn(hd)

    def score(m, n):  # q at position m, k at position n
        qm = apply_rope(q.view(1, 1, 1, hd), cos[m:m + 1], sin[m:m + 1]).flatten()
        kn = apply_rope(k.view(1, 1, 1, hd), cos[n:n + 1], sin[n:n + 1]).flatten()
        return (qm @ kn).item()

    for m, n, shift in [(5, 2, 10), (7, 7, 30), (3, 9, 40)]:
        assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=1e-4, abs_tol=1e-5)
    assert not math.isclose(score(5, 2), score(5, 4), rel_tol=1e-3)   # but it does see the distance
    # a rotation keeps lengths: RoPE moves the direction, not the size
    rotated = apply_rope(q.view(1, 1, 1, hd), cos[9:10], sin[9:10]).flatten()
    assert torch.allclose(rotated.norm(), q.norm(), atol=1e-5)


def reference_attention(attn, x, cos, sin):
    """Plain multi-head attention written out by hand: softmax(q·kᵀ/√d + causal mask)·v, per head."""
    B, T, C = x.shape
    H, Hkv, hd = attn.n_head, attn.n_kv_head, attn.hd
    q, k, v = attn.qkv(x).split([H * hd, Hkv * hd, Hkv * hd], -1)
    q = apply_rope(q.view(B, T, H, hd).transpose(1, 2), cos, sin)
    k = apply_rope(k.view(B, T, Hkv, hd).transpose(1, 2), cos, sin)
    v = v.view(B, T, Hkv, hd).transpose(1, 2)
    heads = []
    for h in range(H):
        g = h // (H // Hkv)  # the k/v head this query head shares
        scores = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(hd)               # (B, T, T)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        heads.append(scores.softmax(-1) @ v[:, g])                                 # (B, T, hd)
    return attn.proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_attention_equals_hand_written_multi_head_attention(n_kv_head):
    model = make(n_kv_head=n_kv_head)
    attn = model.blocks[0].attn
    x = torch.randn(2, 10, 32)
    cos, sin = model.rope_cos[:10], model.rope_sin[:10]
    assert torch.allclose(attn(x, cos, sin), reference_attention(attn, x, cos, sin), atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads():
    """GQA with kv_heads == heads is plain MHA; GQA with fewer kv heads equals MHA whose k/v heads are
    copies within each group (same weights)."""
    gqa = make(n_kv_head=2)
    mha = make(seed=1, n_kv_head=4)
    sd = gqa.state_dict()
    hd, rep = 8, 2
    for i in range(2):
        w = sd[f"blocks.{i}.attn.qkv.weight"]                          # (H·hd + 2·Hkv·hd, C)
        q, k, v = w.split([4 * hd, 2 * hd, 2 * hd], dim=0)
        k = k.view(2, hd, -1).repeat_interleave(rep, dim=0).reshape(4 * hd, -1)
        v = v.view(2, hd, -1).repeat_interleave(rep, dim=0).reshape(4 * hd, -1)
        sd[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])
    mha.load_state_dict(sd)
    idx = torch.randint(0, 97, (2, 16))
    assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-5)


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("extra", [{}, {"tie_embeddings": False, "qk_norm": True, "n_kv_head": 2}])
def test_parameter_count_formula(name, extra):
    cfg = GPTConfig.preset(name, **extra)
    with torch.device("meta"):  # count without allocating 124M parameters
        model = GPT(cfg)
    real = sum(p.numel() for p in model.parameters())
    assert param_count_formula(cfg)["total"] == real == model.num_params_by_component()["total"]
    assert param_count_formula(cfg) == model.num_params_by_component()


def test_preset_sizes_are_as_advertised():
    total = {n: param_count_formula(GPTConfig.preset(n))["total"] for n in PRESETS}
    assert 3e6 < total["tiny"] < 4e6
    assert 25e6 < total["small"] < 27e6
    assert 120e6 < total["base"] < 128e6
    # worked example of the lesson: tiny by hand
    assert total["tiny"] == 2048 * 256 + 4 * (4 * 256 * 256 + 3 * 256 * 704 + 2 * 256) + 256


def test_inputs_embeds_path_equals_idx_path():
    model = make()
    idx = torch.randint(0, 97, (2, 12))
    targets = torch.randint(0, 97, (2, 12))
    a, la = model(idx, targets=targets)
    b, lb = model(inputs_embeds=model.embed(idx), targets=targets)
    assert torch.equal(a, b) and torch.equal(la, lb)
    ga = model.generate(idx[:1], 10, temperature=0)
    gb = model.generate(inputs_embeds=model.embed(idx[:1]), max_new_tokens=10, temperature=0)
    assert torch.equal(ga, gb)
    with pytest.raises(CourseError):
        model(idx, inputs_embeds=model.embed(idx))


def test_loss_ignores_minus_100():
    model = make()
    idx = torch.randint(0, 97, (2, 12))
    targets = torch.randint(0, 97, (2, 12))
    masked = targets.clone()
    masked[:, :5] = -100
    logits, loss = model(idx, targets=masked)
    manual = F.cross_entropy(logits[:, 5:].reshape(-1, 97), targets[:, 5:].reshape(-1))
    assert torch.allclose(loss, manual, atol=1e-6)
    assert model(idx)[1] is None


def test_prompt_longer_than_context_is_a_clear_error():
    model = make()
    too_long = torch.zeros(1, 65, dtype=torch.long)
    with pytest.raises(CourseError, match="block_size"):
        model.generate(too_long, max_new_tokens=3)
    with pytest.raises(CourseError, match="block_size"):
        model(too_long)


def test_generation_stops_when_context_is_full():
    model = make()
    out = model.generate(torch.zeros(1, 60, dtype=torch.long), max_new_tokens=50, temperature=0)
    assert out.shape == (1, 5)  # the last new token is never fed back, so 64 − 60 + 1 fit


def test_generate_stops_at_eos_and_streams():
    model = make()
    prompt = torch.randint(0, 97, (1, 4))
    free = model.generate(prompt, max_new_tokens=12, temperature=0)
    eos = free[0, 3].item()
    first = (free[0] == eos).nonzero()[0].item()
    streamed = []
    out = model.generate(prompt, max_new_tokens=12, temperature=0, eos_id=eos, on_token=lambda t: streamed.append(t.item()))
    assert out[0].tolist() == free[0, :first + 1].tolist()  # stops right after eos, eos included
    assert streamed == out[0].tolist()


def test_sampling_controls():
    model = make()
    prompt = torch.randint(0, 97, (3, 4))
    greedy = model.generate(prompt, 8, temperature=0)
    torch.manual_seed(0)
    assert torch.equal(model.generate(prompt, 8, temperature=1.0, top_k=1), greedy)
    assert torch.equal(model.generate(prompt, 8, temperature=1.0, top_p=1e-6), greedy)
    torch.manual_seed(0)
    sampled = model.generate(prompt, 8, temperature=1.5, top_k=20, top_p=0.9)
    assert sampled.shape == (3, 8) and sampled.max() < 97
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=1.5)):
        with pytest.raises(CourseError):
            model.generate(prompt, 2, **bad)


def test_config_roundtrip_and_bad_configs():
    cfg = GPTConfig.preset("small", vocab_size=300)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.ffn_hidden == 1408 and cfg.n_kv_head == 2
    with pytest.raises(CourseError, match="unknown keys"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_experts": 8})
    with pytest.raises(CourseError):
        GPTConfig.preset("huge")
    with pytest.raises(CourseError):
        GPTConfig(n_embd=256, n_head=4, n_kv_head=3)


def test_training_mode_is_restored_and_dropout_is_off_when_generating():
    model = make(dropout=0.5)
    model.train()
    prompt = torch.randint(0, 97, (1, 4))
    a = model.generate(prompt, 6, temperature=0)
    b = model.generate(prompt, 6, temperature=0)
    assert torch.equal(a, b) and model.training
