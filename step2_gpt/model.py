"""A modern decoder-only GPT in one file: RMSNorm, RoPE, grouped-query attention, SwiGLU, tied embeddings,
and KV-cache generation. The layout is Llama's, so `export_hf.py` can hand the weights to transformers'
`LlamaForCausalLM` and get the same logits.

    python model.py --demo     # shapes through the network, parameter counts, the causal mask, untrained text
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import CourseError

# ----------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class GPTConfig:
    vocab_size: int = 2048
    block_size: int = 512          # context length: the most positions one forward pass may see
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None   # None → n_head (plain multi-head); fewer → grouped-query attention
    n_embd: int = 256
    ffn_hidden: int | None = None  # None → SwiGLU default: 8/3 · n_embd rounded up to a multiple of 64
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qk_norm: bool = False          # RMSNorm on q and k per head (Qwen3/OLMo2 style); Llama has none

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.ffn_hidden is None:  # SwiGLU has 3 matrices instead of 2: 8/3 keeps the count of a 4x MLP
            self.ffn_hidden = 64 * math.ceil(8 * self.n_embd / 3 / 64)
        if self.n_embd % self.n_head:
            raise CourseError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise CourseError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if (self.n_embd // self.n_head) % 2:
            raise CourseError(f"head size n_embd/n_head={self.n_embd // self.n_head} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        if name not in PRESETS:
            raise CourseError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:  # a key we do not know means a checkpoint from a different model: refuse, do not guess
            raise CourseError(f"model config has unknown keys {sorted(unknown)}; not a step-2 GPT config")
        return cls(**d)


# tiny: 3.7M at vocab 2048 (CPU minutes). small: 25.8M at minimind's vocab 6400 (8 × 512, GQA 8/2, ffn 1408).
# base: 123.6M at GPT-2's padded vocab 50304 (12 × 768, ffn 2048). Pass vocab_size= your tokenizer's size.
PRESETS = {
    "tiny": dict(vocab_size=2048, block_size=512, n_layer=4, n_head=4, n_embd=256),
    "small": dict(vocab_size=6400, block_size=512, n_layer=8, n_head=8, n_kv_head=2, n_embd=512),
    "base": dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


def param_count_formula(cfg: GPTConfig) -> dict:
    """The parameter count by hand (the lesson's worked example); tests check it against the real model."""
    C, V, L, hd = cfg.n_embd, cfg.vocab_size, cfg.n_layer, cfg.head_dim
    counts = {
        "embedding": V * C,                                                            # one row per token
        "attention": L * (C * cfg.n_head * hd + 2 * C * cfg.n_kv_head * hd + cfg.n_head * hd * C),  # q, k, v, o
        "mlp": L * 3 * C * cfg.ffn_hidden,                                             # gate, up, down
        "norms": L * 2 * C + C + (L * 2 * hd if cfg.qk_norm else 0),                   # 2 per block + final
        "lm_head": 0 if cfg.tie_embeddings else V * C,
    }
    counts["total"] = sum(counts.values())
    return counts


# ----------------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned gain. No mean, no bias: cheaper than
    LayerNorm and just as stable. Computed in fp32 so bf16 training does not lose the small variances."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()                                                     # (..., dim)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., dim)
        return self.weight * xf.to(x.dtype)                                # (..., dim)


def rope_tables(head_dim: int, n_pos: int, theta: float):
    """cos/sin for every position and channel, in the "rotate half" layout: channel i is paired with
    channel i + head_dim/2 and both turn by the angle pos · theta^(-2i/head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)                  # (P, hd/2)
    angles = torch.cat([angles, angles], dim=-1)                                              # (P, hd)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each (x_i, x_{i+hd/2}) pair by its position's angle, so q·k depends only on the distance."""
    x1, x2 = x.chunk(2, dim=-1)                   # (B, H, T, hd/2) each
    rotated = torch.cat([-x2, x1], dim=-1)        # (B, H, T, hd)
    return x * cos + rotated * sin                # (B, H, T, hd); cos/sin (T, hd) broadcast


class KVCache:
    """Keys and values of every layer for the positions processed so far, so that each new token only
    needs its own q, k, v: generation costs O(T) per token instead of re-running the whole prefix."""

    def __init__(self, cfg: GPTConfig):
        self.cfg, self.pos = cfg, 0     # pos: how many positions are stored
        self.k = [None] * cfg.n_layer
        self.v = [None] * cfg.n_layer

    def update(self, layer: int, k, v):
        B, Hkv, T, hd = k.shape
        if self.k[layer] is None:  # allocate the whole context once: appending by torch.cat would copy each step
            shape = (B, Hkv, self.cfg.block_size, hd)
            self.k[layer] = k.new_zeros(shape)  # (B, Hkv, block_size, hd)
            self.v[layer] = v.new_zeros(shape)  # (B, Hkv, block_size, hd)
        self.k[layer][:, :, self.pos:self.pos + T] = k
        self.v[layer][:, :, self.pos:self.pos + T] = v
        return self.k[layer][:, :, :self.pos + T], self.v[layer][:, :, :self.pos + T]  # (B, Hkv, pos+T, hd)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        # q, k, v in one matmul (faster than three); export_hf.py splits it into q_proj/k_proj/v_proj.
        self.qkv = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * self.hd, bias=False)
        self.proj = nn.Linear(cfg.n_head * self.hd, cfg.n_embd, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def project(self, x, cos, sin):
        """x (B, T, C) → q (B, H, T, hd), k and v (B, Hkv, T, hd): normalized (qk_norm) and rotated (RoPE).
        Separate from forward so tools can recompute attention weights, which SDPA does not return."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.hd, self.n_kv_head * self.hd, self.n_kv_head * self.hd], -1)
        q = q.view(B, T, self.n_head, self.hd).transpose(1, 2)     # (B, H, T, hd)
        k = k.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
        v = v.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)                  # (B, H, T, hd), (B, Hkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)    # positions enter here, and only here
        return q, k, v

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.project(x, cos, sin)                        # (B, H, T, hd), (B, Hkv, T, hd) ×2
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)                       # (B, Hkv, S, hd), S = start + T
        # GQA: each k/v head serves n_head/n_kv_head query heads. enable_gqa lets SDPA share them without
        # copying; it computes exactly k.repeat_interleave(n_head // n_kv_head, dim=1) attention.
        gqa = self.n_kv_head != self.n_head
        mask, causal = None, T > 1
        if start > 0 and T > 1:  # a chunk after cached positions: row i sees keys 0 .. start+i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)  # (T, S)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=gqa)                                     # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.hd)  # (B, T, H·hd)
        return self.resid_drop(self.proj(y))                         # (B, T, C)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the gate decides, per hidden unit, how much of `up` passes."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        # Two matrices, not one fused: silu and * on contiguous outputs are faster than on halves of one.
        self.gate = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False)
        self.up = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = F.silu(self.gate(x)) * self.up(x)    # (B, T, F)
        return self.drop(self.down(h))           # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: each sublayer reads a normalized copy of the stream and adds its result."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, cache=None, layer=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)  # (B, T, C): tokens exchange information
        x = x + self.mlp(self.mlp_norm(x))                            # (B, T, C): each token thinks alone
        return x


# ----------------------------------------------------------------------------------------------------
# The model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = cfg = config
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # reading and writing a token use the same vector: saves V·C parameters
            self.lm_head.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.block_size, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hd): recomputable, not saved
        self.register_buffer("rope_sin", sin, persistent=False)  # (block_size, hd)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual writes shrink with depth so the stream stays O(1)
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def embed(self, idx):
        """Token ids (B, T) → vectors (B, T, C); the VLM splices image features into this."""
        return self.tok_embeddings(idx)  # (B, T, C)

    def _inputs(self, idx, inputs_embeds):
        if (idx is None) == (inputs_embeds is None):
            raise CourseError("pass exactly one of idx (token ids) or inputs_embeds (vectors)")
        return self.embed(idx) if inputs_embeds is None else inputs_embeds  # (B, T, C)

    def hidden_states(self, x, kv_cache: KVCache | None = None):
        """Embeddings (B, T, C) → final normalized hidden states (B, T, C); with a cache, x continues it."""
        B, T, C = x.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise CourseError(f"sequence of {start + T} positions is longer than the model's context "
                              f"(block_size={self.config.block_size}); shorten the input")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # (T, hd)
        x = self.drop(x)                                                           # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, kv_cache, i)                                    # (B, T, C)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.norm(x)                                                        # (B, T, C)

    def forward(self, idx=None, inputs_embeds=None, targets=None, kv_cache: KVCache | None = None):
        """Logits (B, T, V) for the next token at every position; with targets (B, T), already shifted
        (targets[:, t] follows position t), also the mean cross-entropy over the positions that are not −100."""
        h = self.hidden_states(self._inputs(idx, inputs_embeds), kv_cache)  # (B, T, C)
        logits = self.lm_head(h)                                            # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx=None, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_id: int | None = None, use_cache: bool = True,
                 inputs_embeds=None, on_token=None):
        """Continue a prompt (ids (B, T) or embeddings (B, T, C)); returns only the new ids (B, n_new).
        temperature 0 = greedy. Stops after max_new_tokens, when every row has produced eos_id (kept as
        its last token; finished rows repeat eos), or when the context is full. on_token(ids (B,)) streams."""
        x = self._inputs(idx, inputs_embeds)  # (B, T0, C)
        B, T0, _ = x.shape
        if T0 == 0:
            raise CourseError("the prompt is empty: give at least one token (e.g. the bos id)")
        if T0 > self.config.block_size:
            raise CourseError(f"the prompt has {T0} tokens but the model's context (block_size) is "
                              f"{self.config.block_size}; shorten the prompt")
        _check_sampling(temperature, top_k, top_p)
        was_training = self.training
        self.eval()  # dropout off while sampling
        cache = KVCache(self.config) if use_cache else None
        feed, new, done = x, [], torch.zeros(B, dtype=torch.bool, device=x.device)
        for _ in range(max_new_tokens):
            # with a cache only the newest token goes through the network; without, the whole sequence
            h = self.hidden_states(feed if use_cache else x, cache)[:, -1]  # (B, C)
            nxt = sample_next(self.lm_head(h), temperature, top_k, top_p)  # (B,)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)  # (B,)
                done |= nxt == eos_id
            new.append(nxt)
            if on_token is not None:
                on_token(nxt)
            if bool(done.all()) or T0 + len(new) > self.config.block_size:
                break  # all rows ended, or feeding the new token would overflow the context
            feed = self.embed(nxt[:, None])                                 # (B, 1, C)
            if not use_cache:
                x = torch.cat([x, feed], dim=1)                             # (B, T+1, C)
        self.train(was_training)
        return torch.stack(new, dim=1) if new else torch.zeros(B, 0, dtype=torch.long, device=x.device)

    def num_params_by_component(self) -> dict:
        """Parameters per component, counting the tied lm_head once (under "embedding")."""
        out = dict.fromkeys(["embedding", "attention", "mlp", "norms", "lm_head"], 0)
        for name, p in self.named_parameters():  # named_parameters lists a shared tensor only once
            key = ("embedding" if name.startswith("tok_embeddings") else "lm_head" if name.startswith("lm_head")
                   else "norms" if "norm" in name else "attention" if ".attn." in name else "mlp")
            out[key] += p.numel()
        out["total"] = sum(out.values())
        return out


def _check_sampling(temperature, top_k, top_p):
    if temperature < 0:
        raise CourseError(f"temperature must be ≥ 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise CourseError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise CourseError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None):
    """One token id per row from logits (B, V): greedy, or sampled after temperature, top-k and top-p."""
    if temperature == 0:
        return logits.argmax(dim=-1)                                   # (B,)
    logits = logits.float() / temperature                              # (B, V)
    if top_k is not None:  # keep only the k most likely tokens
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))       # (B, V)
    if top_p is not None and top_p < 1:  # keep the smallest set of tokens whose probability reaches top_p
        sorted_logits, order = logits.sort(dim=-1, descending=True)    # (B, V)
        probs = sorted_logits.softmax(-1)                              # (B, V)
        before = probs.cumsum(-1) - probs                              # (B, V): mass of the better tokens
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)  # (B, V) back in vocab order
    return torch.multinomial(logits.softmax(-1), 1).squeeze(-1)        # (B,)


# The steps whose checkpoint is a plain step-2 GPT, the most trained first: a later step starts from the newest.
GPT_STEPS = ("rlhf", "sft", "pretrain", "gpt")


def newest_gpt_checkpoint(steps=GPT_STEPS):
    """runs/<step> of the first of `steps` that has a checkpoint; if none has, one sentence saying what makes one."""
    from common import RUNS_DIR
    for name in steps:
        if (RUNS_DIR / name / "config.json").is_file():
            return RUNS_DIR / name
    raise CourseError(f"no language model in {', '.join('runs/' + s for s in steps)}; make one with: "
                      "python step3_pretrain/train.py  (or pass --init FOLDER)")


def load_gpt(path, expect_steps=None, device="cpu", hint: str = "python step3_pretrain/train.py"):
    """A course checkpoint folder → (model in eval mode on `device`, its tokenizer, the Checkpoint). The one
    loader every step uses for a GPT: the wrong step, another vocabulary or weights that do not fit step 2's
    GPT each get one sentence (with `hint`, the command that makes the expected checkpoint)."""
    from common.checkpoint import check_vocab, load_checkpoint
    from step1_tokenizer.model import load_tokenizer

    ckpt = load_checkpoint(path, expect_steps=expect_steps, hint=hint)
    tokenizer = load_tokenizer(ckpt.path)
    check_vocab(ckpt, tokenizer.vocab_size)
    try:
        model = GPT(GPTConfig.from_dict(ckpt.model_config))
        model.load_state_dict(ckpt.state_dict, strict=True)
    except (RuntimeError, TypeError) as e:
        raise CourseError(f"{ckpt.path}: the weights do not fit step 2's current GPT ({str(e).splitlines()[0][:120]}); "
                          f"retrain it with: {hint}") from None
    return model.to(device).eval(), tokenizer, ckpt


UNTRAINED = "untrained (--quick)"


def quick_or_load_gpt(path, quick: bool, expect_steps=GPT_STEPS, hint: str = "python step3_pretrain/train.py"):
    """load_gpt(path) → (model, tokenizer, where it came from); for a --quick smoke run when `path` holds no
    checkpoint, an untrained 2-layer GPT with the course tokenizer instead, so a step runs before the ones
    before it have (its numbers then mean nothing, and the returned "where" says so)."""
    if quick and not (pathlib.Path(path) / "config.json").is_file():
        from step1_tokenizer.model import course_tokenizer
        tok = course_tokenizer(fallback=True)
        return GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, n_layer=2)), tok, UNTRAINED
    model, tok, ckpt = load_gpt(path, expect_steps=expect_steps, hint=hint)
    return model, tok, str(ckpt.path)


# ----------------------------------------------------------------------------------------------------
# python model.py --demo


def demo():
    torch.manual_seed(0)
    cfg = GPTConfig.preset("tiny")
    model = GPT(cfg).eval()
    B, T = 2, 8
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    print(f"== tiny preset: {cfg}\n\n== shapes for one batch: idx {tuple(idx.shape)} (B={B}, T={T})")
    hooks = []
    watch = [("tok_embeddings", model.tok_embeddings), ("blocks[0].attn_norm", model.blocks[0].attn_norm),
             ("blocks[0].attn.qkv", model.blocks[0].attn.qkv), ("blocks[0].attn", model.blocks[0].attn),
             ("blocks[0].mlp.gate", model.blocks[0].mlp.gate), ("blocks[0].mlp", model.blocks[0].mlp)]
    watch += [(f"blocks[{i}]", b) for i, b in enumerate(model.blocks)] + [("norm", model.norm), ("lm_head", model.lm_head)]
    for name, mod in watch:
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, name=name: print(f"  {name:<22} {type(m).__name__:<20} -> {tuple(o.shape)}")))
    with torch.no_grad():
        logits, _ = model(idx)
    for h in hooks:
        h.remove()
    print(f"  logits {tuple(logits.shape)} = (B, T, vocab)")

    print("\n== parameters per component (tied lm_head counted once, under embedding)")
    keys = ["embedding", "attention", "mlp", "norms", "lm_head", "total"]
    print(f"  {'preset':<6} " + " ".join(f"{k:>12}" for k in keys))
    for name in PRESETS:
        n = param_count_formula(GPTConfig.preset(name))  # formula: building `base` just to count is slow
        print(f"  {name:<6} " + " ".join(f"{n[k]:>12,}" for k in keys))
    print(f"  (tiny built and counted: {model.num_params_by_component()['total']:,})")

    print("\n== causal mask (row = query position, ■ = may attend, · = future, hidden)")
    for row in torch.ones(T, T).tril().bool():
        print("  " + " ".join("■" if v else "·" for v in row))

    print("\n== an untrained model speaks (random weights: random tokens)")
    from step1_tokenizer.model import course_tokenizer
    tok = course_tokenizer(fallback=True, say=lambda line: print("  (" + line + ")"))
    model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size)).eval()
    prompt = tok.encode("小明有3个苹果，")
    out = model.generate(torch.tensor([prompt]), max_new_tokens=30, temperature=1.0)
    print("  " + repr(tok.decode(prompt + out[0].tolist())))


def main():
    from common.cli import demo_parser, wants_demo
    if wants_demo(demo_parser("The step-2 GPT: its shapes, parameter counts, causal mask and an untrained sample.")):
        demo()


if __name__ == "__main__":
    from common.cli import run
    run(main)
