"""Step 6's training loop and its pieces: the LLM a VLM starts from, one stage's loop (`fit`), world features
and padded batches (shared by train.py, eval.py, debug.py and the lab's ablations)."""
import random
import time
from dataclasses import dataclass, field

import torch

from common import RUNS_DIR
from common.device import autocast
from common.errors import CourseError
from common.training import lr_at
from step2_gpt.model import quick_or_load_gpt

from step6_vlm.data import RENDER_VERSION, offworld_picture, render_scene, scene_key
from step6_vlm.model import VLM, apply_freeze, build_example, connector_params
from step6_vlm.vision import cached_features, encoder_key


def world_features(vision, processor, scenes, vision_encoder: str, feature_layer: int, size: int,
                   use_cache: bool = True, cache_root=None) -> tuple:
    """(N, P, D) frozen features of the scenes' pictures, through the cache. Returns (features, n_encoded)."""
    keys = [f"{RENDER_VERSION}:{size}:{scene_key(s)}" for s in scenes]
    by_key = dict(zip(keys, scenes))
    kw = {"cache_root": cache_root} if cache_root else {}
    return cached_features(vision, processor, keys, lambda k: render_scene(by_key[k], size),
                           encoder_key(vision_encoder, feature_layer), feature_layer, use_cache=use_cache, **kw)


def offworld_features(vision, processor, numbers, vision_encoder: str, feature_layer: int, size: int,
                      cache_root=None) -> tuple:
    """(N, P, D) frozen features of the off-world pictures data.offworld_picture(n) for n in `numbers`, through
    the cache. Returns (features, n_encoded)."""
    keys = [f"offworld-v1:{size}:{n}" for n in numbers]
    by_key = dict(zip(keys, numbers))
    kw = {"cache_root": cache_root} if cache_root else {}
    return cached_features(vision, processor, keys, lambda k: offworld_picture(by_key[k], size),
                           encoder_key(vision_encoder, feature_layer), feature_layer, **kw)


@dataclass
class FeatureStore:
    """The frozen features of every picture a run uses, in one (N, P, D) tensor so that a batch is one gather,
    with named splits: `store.row("test", 3)` is the row of the 4th test picture."""
    tensor: torch.Tensor
    start: dict = field(default_factory=dict)   # split name → its first row
    size: dict = field(default_factory=dict)    # split name → its number of pictures

    def add(self, split: str, feats: torch.Tensor) -> "FeatureStore":
        self.start[split], self.size[split] = len(self.tensor), len(feats)
        self.tensor = torch.cat([self.tensor, feats]) if len(self.tensor) else feats
        return self

    def row(self, split: str, i: int) -> int:
        return self.start[split] + i

    def rows(self, split: str) -> list:
        return list(range(self.start[split], self.start[split] + self.size[split]))

    def items(self, split: str, items) -> list:
        """Eval items or (picture index, messages) pairs of one split, re-pointed at the store's rows."""
        return [dict(it, image=self.row(split, it["image"])) if isinstance(it, dict) else (self.row(split, it[0]), *it[1:])
                for it in items]


def world_store(vision, processor, splits: dict, vision_encoder: str, feature_layer: int, size: int,
                cache_root=None) -> tuple:
    """A FeatureStore of the data world's splits {name: scenes}, through the cache. Returns (store, n_encoded)."""
    names = [n for n, scenes in splits.items() if scenes]
    feats, n_enc = world_features(vision, processor, [s for n in names for s in splits[n]], vision_encoder,
                                  feature_layer, size, cache_root=cache_root)
    sizes = [len(splits[n]) for n in names]
    starts = [sum(sizes[:j]) for j in range(len(names))]
    return FeatureStore(feats, dict(zip(names, starts)), dict(zip(names, sizes))), n_enc


def encode(vlm: VLM, tokenizer, convs) -> list:
    """[(image_index, messages)] → [(image_index, ids, labels)] (placeholders expanded, labels −100 off-answer)."""
    return [(i, *build_example(vlm, tokenizer, m)) for i, m in convs]


def collate(examples, pad_id: int) -> tuple:
    """Right-padded (x, y, image_index): x = ids[:-1], y = labels[1:] (y[:, t] is the token after x[:, t])."""
    T = max(len(ids) for _, ids, _ in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), -100, dtype=torch.long)
    for r, (_, ids, lab) in enumerate(examples):
        x[r, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[r, :len(ids) - 1] = torch.tensor(lab[1:])
    return x, y, torch.tensor([i for i, _, _ in examples])


def batches(examples, batch_size: int, seed: int, bucket: int = 16):
    """Endless shuffled batches; each epoch a new order. Examples whose lengths fall in the same `bucket`-token
    band go together in random order: little compute is spent on padding, and a batch still mixes question types
    and languages. (Sorting by exact length made most batches one type in one language; the task of each step then
    flipped, and stage 2 learned colour/shape questions more slowly: README 问题 7, item 13.)"""
    if not examples:
        raise CourseError("no training examples to make batches of")
    batch_size = min(batch_size, len(examples))  # a data set smaller than one batch is one batch (not none, forever)
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        order.sort(key=lambda j: len(examples[j][1]) // bucket)   # stable: random order within a band
        out = [order[k:k + batch_size] for k in range(0, len(order) - batch_size + 1, batch_size)]
        rng.shuffle(out)
        for b in out:
            yield [examples[j] for j in b]


LLM_STEPS = ("rlhf", "sft", "pretrain")  # the language models of steps 5, 4 and 3, the most trained first


def init_llm(init=None, quick: bool = False):
    """The LLM every VLM starts from (train.py, the lab's ablations): `init`, else the newest the course has made
    (runs/rlhf, else runs/sft, else runs/pretrain); with `quick`, an untrained tiny one when none exists. Returns
    (gpt, tokenizer, where it came from)."""
    if init:  # named: it must exist, --quick or not
        return quick_or_load_gpt(init, quick=False)
    found = next((RUNS_DIR / s for s in LLM_STEPS if (RUNS_DIR / s / "config.json").is_file()), None)
    if found is None and not quick:
        raise CourseError("no language model to start from (runs/rlhf, runs/sft or runs/pretrain); make one with: "
                          "python step3_pretrain/train.py  (or run this with --quick for a smoke test)")
    return quick_or_load_gpt(found or RUNS_DIR / "pretrain", quick)


def phase_steps(steps: int, shares) -> list:
    """Split a stage's steps by the phases' shares; the last phase gets the rest, every phase at least one."""
    out = [max(1, round(steps * sh)) for sh in shares[:-1]]
    return out + [max(1, steps - sum(out))]


def fit(vlm, tok, phases, feats, stage: str, steps: int, batch: int, lr: float, proj_lr: float, stage1_llm: str,
        last_n: int, seed: int, device, dtype=torch.float32, log=None, on_eval=None,
        eval_every: int = 0) -> dict:
    """The loop of one stage (train.py and the lab's ablations): freeze by the table, AdamW with the projection column at its
    own learning rate, warmup + cosine, clipping. `phases` [(examples, share of the steps)] run in order, each
    with a fresh optimizer and its own schedule (stage 2's curriculum; one phase otherwise). `feats` (N, P, D): the
    frozen encoder's features of every picture, computed once (the encoder never changes). Returns the final
    loss, the projection's gradient norm at the first step (> 0, or the image path is cut) and the training time.
    `on_eval(step, vlm)` is called every `eval_every` steps of the last phase and after its last step (e.g. to keep
    the best checkpoint); its time is not training time."""
    apply_freeze(vlm, stage, stage1_llm, last_n)
    proj_params = [p for p in connector_params(vlm) if p.requires_grad]
    llm_params = [p for p in vlm.llm.parameters() if p.requires_grad]
    grad0, t0, done = None, time.perf_counter(), 0
    for (examples, _), n_steps in zip(phases, phase_steps(steps, [sh for _, sh in phases])):
        groups = [{"params": proj_params, "base": proj_lr}] + ([{"params": llm_params, "base": lr}] if llm_params else [])
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
        it = batches(examples, batch, seed)
        last_phase = done + n_steps == steps
        for step in range(n_steps):
            vlm.train()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, max_lr=g["base"], total_steps=n_steps, warmup_steps=min(50, n_steps // 10))
            x, y, idx = collate(next(it), tok.pad_id)                      # (B, T), (B, T), (B,)
            with autocast(device, dtype):
                _, loss = vlm(x.to(device), y.to(device), image_features=feats[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad0 is None:
                grad0 = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in proj_params if p.grad is not None)))
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            if log is not None:
                log.train_step(done + step, loss.item(), opt.param_groups[-1]["lr"], tokens=int((y != -100).sum()))
            if on_eval is not None and last_phase and eval_every and ((step + 1) % eval_every == 0 or step + 1 == n_steps):
                t_eval = time.perf_counter()
                on_eval(done + step + 1, vlm)
                t0 += time.perf_counter() - t_eval
        done += n_steps
    return {"loss": loss.item(), "proj_grad0": grad0, "train_s": time.perf_counter() - t0}
