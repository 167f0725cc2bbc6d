"""SFT's two ideas: the loss mask (train only on the assistant's tokens) and LoRA, written from scratch.

    python model.py --demo     # a conversation with the trained tokens marked; full vs LoRA trainable counts
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import CourseError

LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.gate", "mlp.up", "mlp.down")


def masked_loss(model, x, y, n_targets=None):
    """Mean cross-entropy over the supervised positions (y != -100) only. A batch with none gives 0, not the
    0/0 = NaN a plain mean would: a real dataset can hold a conversation whose answers were all cut off.
    `n_targets`: divide by this count instead of the batch's own (DDP: the global count over the processes)."""
    logits, _ = model(x)                                                      # (B, T, V)
    total = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100, reduction="sum")
    return total / ((y != -100).sum() if n_targets is None else n_targets).clamp(min=1)


class LoRALinear(nn.Module):
    """y = W x + (α/r)·B(A x): W frozen, only A (r×in) and B (out×r) train. B starts at zero, so at
    initialisation the wrapped layer computes exactly what the base layer did."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if r < 1:
            raise CourseError(f"LoRA rank must be ≥ 1, got {r}")
        self.base, self.r, self.scale, self.merged = base, r, alpha / r, False
        base.weight.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def delta(self):
        return self.scale * self.lora_b @ self.lora_a               # (out, in)

    def forward(self, x):
        y = self.base(x)                                            # (B, T, out)
        if self.merged:
            return y
        return y + self.scale * (x @ self.lora_a.T) @ self.lora_b.T  # (B, T, out)


def apply_lora(model, targets=LORA_TARGETS, r: int = 8, alpha: float = 16.0):
    """Freeze every parameter, then wrap each nn.Linear whose name ends with a target in a LoRALinear."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full.endswith(tuple(targets)):
                setattr(mod, child_name, LoRALinear(child, r, alpha))
                wrapped += 1
    if not wrapped:
        raise CourseError(f"no linear layer matches the LoRA targets {targets}")
    return model


def _lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


@torch.no_grad()
def merge_lora(model):
    """W ← W + (α/r)·B·A in every LoRA layer: the same function with no extra matmuls."""
    for m in _lora_layers(model):
        if not m.merged:
            m.base.weight += m.delta()
            m.merged = True
    return model


@torch.no_grad()
def unmerge_lora(model):
    for m in _lora_layers(model):
        if m.merged:
            m.base.weight -= m.delta()
            m.merged = False
    return model


@torch.no_grad()
def plain_state_dict(model) -> dict:
    """The merged weights W + (α/r)·B·A under step 2's names (".base." dropped, A and B left out): a normal GPT
    checkpoint. Computed into new tensors, never by merging in place and back: (W + Δ) − Δ is not exactly W in
    floating point, and a save must not nudge the weights the run goes on training."""
    sd = {k.replace(".base.", "."): v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear) and not m.merged:
            sd[f"{name}.weight"] += m.delta()
    return sd


def lora_state(model) -> dict:
    """Only the adapters (A and B of every layer): what a LoRA run needs, besides its base, to resume."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def load_lora_state(model, state: dict) -> None:
    missing = set(lora_state(model)) - set(state)
    if missing:
        raise CourseError(f"the saved LoRA adapters do not fit this model (missing {sorted(missing)[:2]}); "
                          "resume with the same --lora rank, or start fresh without --resume")
    model.load_state_dict(state, strict=False)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def demo():
    from step1_tokenizer.model import course_tokenizer
    from step2_gpt.model import GPT, GPTConfig
    from step4_sft.data import world_conversations
    tok = course_tokenizer(fallback=True)
    msgs = world_conversations(4, 1337)[3]["messages"]
    ids, mask = tok.render_conversation(msgs)
    color = sys.stdout.isatty()
    mark = (lambda s: f"\033[1;32m{s}\033[0m") if color else (lambda s: f"[{s}]")
    print("== one conversation; the loss trains only on the marked tokens (assistant content + <|im_end|>)")
    spans, start = [], 0  # runs of tokens with the same mask value, each decoded whole (no half characters)
    for k in range(1, len(ids) + 1):
        if k == len(ids) or mask[k] != mask[start]:
            spans.append((tok.decode(ids[start:k]), mask[start]))
            start = k
    print("".join(mark(text) if m else text for text, m in spans))
    print(f"{len(ids)} tokens, {sum(mask)} trained ({sum(mask) / len(ids):.0%})")
    model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size))
    full = sum(p.numel() for p in model.parameters())
    apply_lora(model, r=8)
    print(f"\n== trainable parameters of the tiny GPT: full SFT {full:,}; LoRA r=8 on {', '.join(LORA_TARGETS)}: "
          f"{trainable(model):,} ({trainable(model) / full:.1%})")


def main():
    from common.cli import demo_parser, wants_demo
    if wants_demo(demo_parser("Step 4: the assistant-only loss mask and LoRA.")):
        demo()


if __name__ == "__main__":
    from common.cli import run
    run(main)
