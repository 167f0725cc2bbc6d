"""NumericVLM: step 6's VLM that reads and writes numbers as values, not digits.

    python model.py --demo      # shapes, the two losses, and which parameters train

A number in the text is one `<num>` token plus its value (processor.py). Two small parts make the value count:
  numeric embedding   value → scale → MLP (1 → 512 → C), ADDED to the `<num>` token's embedding at its position:
                      the token says "a number stands here", the MLP says which. Added rather than replacing, so the
                      LLM keeps the marker it learnt and the MLP (its last layer starts at zero) begins as a no-op.
  regression head     hidden state → 1, read where the model predicts `<num>` as the next token: the same position
                      whose logits choose `<num>` also says its value. Loss = cross-entropy + α · MSE there.
Values are scaled by a signed log, sign(v)·log(1 + |v|), in fp32: 1e6 becomes 13.8, so no value overflows bf16 or
blows up a gradient, and an error is relative (5% of 10 weighs like 5% of 1000). Then standardised by the training
values' mean and spread of that log (two buffers, set by train.py, saved with the weights): the MLP sees inputs of
order 1 and the head predicts targets of order 1 from its first step (started at 0, it would spend its first
thousand Adam steps only walking its bias to log(50) ≈ 3.9). The MSE is in those standard units. When generating,
the head's value of a `<num>` is fed back as the numeric embedding of that position, as the true value is in training.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import CourseError
from step6_vlm.loop import collate
from step6_vlm.model import VLM, build_example

EMBED_DIM = 512      # the numeric embedding's hidden width (1 → 512 → C)
MAX_SCALED = 80.0    # |scaled value| cap when mapping back: expm1(80) ≈ 5.5e34 still fits fp32


def scale(v: torch.Tensor) -> torch.Tensor:
    """Signed log in fp32: monotone, exact at 0, and 1e6 → 13.8."""
    v = v.float()
    return torch.sign(v) * torch.log1p(v.abs())


def unscale(s: torch.Tensor) -> torch.Tensor:
    s = s.float().clamp(-MAX_SCALED, MAX_SCALED)
    return torch.sign(s) * torch.expm1(s.abs())


class NumericVLM(nn.Module):
    def __init__(self, vlm: VLM, num_id: int, embed_dim: int = EMBED_DIM, numbers: str = "num"):
        super().__init__()
        if numbers not in ("num", "text"):
            raise CourseError(f"unknown numbers mode {numbers!r}; choose num or text")
        C = vlm.llm.config.n_embd
        self.vlm, self.num_id, self.numbers = vlm, num_id, numbers
        self.num_embed = nn.Sequential(nn.Linear(1, embed_dim), nn.GELU(), nn.Linear(embed_dim, C))
        nn.init.zeros_(self.num_embed[2].weight)   # starts as a no-op: the LLM first sees its usual <num>
        nn.init.zeros_(self.num_embed[2].bias)
        self.num_head = nn.Linear(C, 1)
        self.register_buffer("num_center", torch.zeros(()))   # mean of scale(v) over the training values
        self.register_buffer("num_spread", torch.ones(()))    # their standard deviation

    def set_value_stats(self, values) -> None:
        s = scale(torch.as_tensor(values, dtype=torch.float32))
        self.num_center.fill_(float(s.mean()))
        self.num_spread.fill_(max(float(s.std()), 1e-3) if len(s) > 1 else 1.0)

    def standard(self, values) -> torch.Tensor:
        """values → standard units: (scale(v) − center) / spread, fp32."""
        return (scale(values) - self.num_center) / self.num_spread

    def from_standard(self, z) -> torch.Tensor:
        return unscale(z.float() * self.num_spread + self.num_center)

    def numeric_params(self) -> list:
        return [*self.num_embed.parameters(), *self.num_head.parameters()]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, H, W) → patch features (N, P, D), WITH gradients when the encoder trains."""
        hs = self.vlm.vision(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return hs[self.vlm.config.feature_layer][:, 1:].float()    # (N, P, D): CLS dropped, as step 6 does

    def embed(self, input_ids, values, image_features=None) -> torch.Tensor:
        """(B, T) ids + (B, T) values → (B, T, C): word embeddings, image tokens spliced in, and at `<num>`
        positions the numeric embedding of the value added. Other positions never touch the MLP's output."""
        emb = None if image_features is None else self.vlm.image_embeds(image_features)
        x = self.vlm.splice(input_ids, emb)                                   # (B, T, C)
        is_num = (input_ids == self.num_id)[..., None]                        # (B, T, 1)
        nv = self.num_embed(self.standard(values)[..., None])                 # (B, T, C), fp32 input
        return torch.where(is_num, x + nv.to(x.dtype), x)

    def forward(self, input_ids, values, targets=None, target_values=None, image_features=None, alpha: float = 1.0):
        """targets (B, T) shifted as in step 6 (−100: no loss); target_values (B, T) the value of targets that are
        `<num>`. Returns a dict: logits (B, T, V), num_pred (B, T) in standard units, and with targets the losses."""
        h = self.vlm.llm.hidden_states(self.embed(input_ids, values, image_features))   # (B, T, C)
        logits = self.vlm.llm.lm_head(h)                                      # (B, T, V)
        out = {"logits": logits, "num_pred": self.num_head(h).squeeze(-1).float()}       # (B, T)
        if targets is not None:
            token_loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
            out.update(token_loss=token_loss, **self.mixed_loss(token_loss, out["num_pred"], targets, target_values, alpha))
        return out

    def mixed_loss(self, token_loss, num_pred, targets, target_values, alpha: float) -> dict:
        """num_loss = MSE in standard units, only where the next token is `<num>`; loss = CE + α · MSE."""
        where = targets == self.num_id                                        # (B, T)
        if target_values is None or not where.any():
            num_loss = num_pred.sum() * 0.0 + 0.0                             # keeps the graph (and +0, not -0)
        else:
            num_loss = F.mse_loss(num_pred[where], self.standard(target_values[where]))
        return {"num_loss": num_loss, "loss": token_loss + alpha * num_loss}

    @torch.no_grad()
    def generate(self, prompts, image_features=None, max_new_tokens: int = 24, eos_id: int | None = None) -> list:
        """Greedy answers to a batch of prompts (lists of ids, `<image>` already expanded) → [(new ids, values)],
        values[k] the head's value where ids[k] is `<num>` (else 0). Rows are right-padded in one buffer; each step
        reads the logits at each row's own last position (causal attention: padding after a row never reaches it)."""
        B, dev = len(prompts), next(self.parameters()).device
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        T = int(lens.max()) + max_new_tokens
        if T > self.vlm.llm.config.block_size:
            raise CourseError(f"prompt + answer need {T} positions, more than the model's context {self.vlm.llm.config.block_size}")
        ids = torch.zeros(B, T, dtype=torch.long, device=dev)
        vals = torch.zeros(B, T, device=dev)
        for r, p in enumerate(prompts):
            ids[r, :len(p)] = torch.tensor(p, device=dev)
        start, done = lens.clone(), torch.zeros(B, dtype=torch.bool, device=dev)
        rows = torch.arange(B, device=dev)
        for _ in range(max_new_tokens):
            n = int(lens.max())
            out = self(ids[:, :n], vals[:, :n], image_features=image_features)
            last = lens - 1
            nxt = out["logits"][rows, last].argmax(-1)                        # (B,)
            v = self.from_standard(out["num_pred"][rows, last])               # (B,) the value if nxt is <num>
            live = ~done
            ids[rows[live], lens[live]] = nxt[live]
            vals[rows[live], lens[live]] = torch.where(nxt == self.num_id, v, torch.zeros_like(v))[live]
            lens = lens + live.long()
            done |= (nxt == eos_id) if eos_id is not None else torch.zeros_like(done)
            if done.all():
                break
        return [(ids[r, start[r]:lens[r]].tolist(), vals[r, start[r]:lens[r]].tolist()) for r in range(B)]


# ----------------------------------------------------------------------------------------------------
# Examples and batches


def numeric_example(model: NumericVLM, tok, messages, where: str = "") -> tuple:
    """Chat messages → (ids, labels, values) of one sequence, images expanded. In "text" mode the numbers are
    written as digits and every value is 0 (the same model, the numeric parts unused)."""
    from step6_vlm.numeric.processor import as_digits, render_numeric
    if model.numbers == "text":
        msgs = [dict(m, content=as_digits(m["content"])) for m in messages]
        ids, labels = build_example(model.vlm, tok, msgs)
        return ids, labels, [0.0] * len(ids)
    raw, mask, values = render_numeric(tok, messages, where=where)
    ids, mask = model.vlm.expand(raw, mask)
    n = model.vlm.tokens_per_image                                   # the values follow the expanded ids
    values = [v for t, v in zip(raw, values) for _ in range(n if t == tok.image_id else 1)]
    if len(ids) > model.vlm.llm.config.block_size:
        raise CourseError(f"{where or 'a conversation'} needs {len(ids)} positions, more than the context")
    return ids, [t if m else -100 for t, m in zip(ids, mask)], values


def numeric_batch(examples, pad_id: int) -> tuple:
    """[(image index, ids, labels, values)] → x, y (step 6's collate), xv, yv (B, T) values, image index (B,)."""
    x, y, idx = collate([(i, ids, lab) for i, ids, lab, _ in examples], pad_id)
    xv, yv = torch.zeros(x.shape), torch.zeros(x.shape)
    for r, (_, _, _, v) in enumerate(examples):
        xv[r, :len(v) - 1] = torch.tensor(v[:-1])
        yv[r, :len(v) - 1] = torch.tensor(v[1:])
    return x, y, xv, yv, idx


# ----------------------------------------------------------------------------------------------------
# Checkpoints: the VLM's weights (its vision encoder too: it may have trained) + the numeric layers


def save_numeric(folder, model: NumericVLM, tok, **kw):
    from common.checkpoint import save_checkpoint
    cfg = {"vlm": asdict(model.vlm.config), "llm": model.vlm.llm.config.to_dict(),
           "numeric": {"embed_dim": model.num_embed[0].out_features, "numbers": model.numbers}}
    return save_checkpoint(folder, state_dict=model.state_dict(), step="vlm_numeric", tokenizer=tok, model_config=cfg, **kw)


def load_numeric(path, device="cpu") -> tuple:
    """(NumericVLM in eval mode, tokenizer, Checkpoint) from a checkpoint written by numeric/train.py."""
    from common.checkpoint import check_vocab, load_checkpoint
    from step1_tokenizer.model import Tokenizer
    from step2_gpt.model import GPT, GPTConfig
    from step6_vlm.model import VLMConfig
    from step6_vlm.vision import load_vision_encoder
    ckpt = load_checkpoint(path, expect_steps="vlm_numeric", hint="python step6_vlm/numeric/train.py")
    if "numeric" not in ckpt.model_config or not any(k.startswith("num_embed.") for k in ckpt.state_dict):
        raise CourseError(f"{ckpt.path} has no numeric layers (num_embed, num_head); train them with "
                          f"python step6_vlm/numeric/train.py")
    tok = Tokenizer.load(ckpt.path)
    check_vocab(ckpt, tok.vocab_size, model_vocab=ckpt.model_config["llm"]["vocab_size"])
    cfg = VLMConfig.from_dict(ckpt.model_config["vlm"])
    vision, _ = load_vision_encoder(cfg.vision_encoder, device)
    nc = ckpt.model_config["numeric"]
    model = NumericVLM(VLM(GPT(GPTConfig.from_dict(ckpt.model_config["llm"])), cfg, vision), tok.num_id,
                       nc["embed_dim"], nc["numbers"])
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as e:
        raise CourseError(f"{ckpt.path}: weights do not fit the numeric VLM config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), tok, ckpt


# ----------------------------------------------------------------------------------------------------
# python model.py --demo


def demo():
    from common.cli import demo_parser, wants_demo
    from step2_gpt.model import GPT, GPTConfig
    from step1_tokenizer.model import course_tokenizer
    from step6_vlm.model import VLMConfig, image_token_id
    from step6_vlm.numeric.processor import decode_numeric
    if wants_demo(demo_parser("NumericVLM: numeric embedding + regression head (数值增强 VLM)")) is None:
        return
    torch.manual_seed(0)
    tok = course_tokenizer(fallback=True)
    cfg = VLMConfig("runs/clip", 128, 9, 63, image_token_id(tok))   # the small CLIP's shapes; random features below
    model = NumericVLM(VLM(GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size)), cfg), tok.num_id)
    msgs = [{"role": "user", "content": "红色柱子的数值是多少？\n<image>"}, {"role": "assistant", "content": "红色柱子是<num><12.5>。"}]
    ids, labels, values = numeric_example(model, tok, msgs)
    x, y, xv, yv, _ = numeric_batch([(0, ids, labels, values)], tok.pad_id)
    feats = torch.randn(1, cfg.n_patches, cfg.vision_dim)
    out = model(x, xv, y, yv, image_features=feats, alpha=1.0)
    k = int((x[0] == tok.num_id).nonzero()[0])
    print(f"""== NumericVLM, real shapes (tiny LLM, random weights)

  text   {msgs[1]['content']!r}
  ids    {len(ids)} positions, <num> (id {tok.num_id}) at position {k}, values[{k}] = {values[k]}
         back to text: {decode_numeric(tok, ids[k - 6:k + 2], values[k - 6:k + 2])!r}
  x, y   {tuple(x.shape)}   values xv, yv {tuple(xv.shape)}   image features {tuple(feats.shape)}
  embedding at <num>: token embedding + MLP(standard(12.5) = {float(model.standard(torch.tensor(12.5))):.3f})
  MLP {model.num_embed}
  logits {tuple(out['logits'].shape)}   num_pred {tuple(out['num_pred'].shape)} (regression head {model.num_head})
  MSE is read at position {k - 1} only (its target is <num>: {bool(y[0, k - 1] == tok.num_id)})

  Token Loss {out['token_loss'].item():.4f}   Float Loss {out['num_loss'].item():.4f}   loss = CE + 1.0·MSE = {out['loss'].item():.4f}
  1e6 scaled: {float(scale(torch.tensor(1e6))):.3f}, back: {float(unscale(scale(torch.tensor(1e6)))):.1f}
""")
    groups = {"vision (--vision-lr)": [], "projection + LLM (--lr)": [*model.vlm.projection.parameters(), model.vlm.image_pos,
              *model.vlm.llm.parameters()], "numeric layers (--numeric-lr)": model.numeric_params()}
    print("== trainable parameters by learning-rate group (the vision encoder is not built in this demo)")
    for name, ps in groups.items():
        print(f"  {name:<32}{sum(p.numel() for p in ps):>12,}")


if __name__ == "__main__":
    from common.cli import run
    run(demo)
