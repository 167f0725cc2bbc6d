"""Stage 0: a small CLIP trained contrastively on data-world pictures and captions, for machines that
cannot download openai/clip-vit-base-patch16. It is a real `transformers.CLIPModel` (a small config),
saved with `save_pretrained`, so the VLM loads it with the very same `CLIPVisionModel.from_pretrained(path)`.
`python train_clip.py` trains it alone; `python train.py` trains it first when no pretrained CLIP is cached.

Why each detail: 63×63 pictures in 21-pixel patches (one patch = one grid cell, 9 patches); every batch
holds pairs of scenes that differ in ONE attribute (a colour, a shape, a size, a place, one thing more or
less), so matching a picture to its caption needs every attribute, not just the easiest one; and part of the
pictures are painted in colours only this CLIP knows (EXTRA_COLORS), so a shape is seen in 15 colours, not 7.
"""
import json
import pathlib
import random
import re
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from common.device import pick_device, seed_everything
from common.files import atomic_folder, atomic_write_text
from common.training import RunLogger, lr_at
from common.world import COLORS, SHAPES, SIZES, Color, describe_scene, random_scene
from step6_vlm.data import (CELL, IMAGE_SIZE, allowed_in_training, cell_labels, painted_scenes, render_scene, scene_key,
                            world_splits)
from step6_vlm.vision import CLIP_DIR, new_image_processor, patch_features, preprocess

WORD = re.compile(r"\w+|[^\w\s]")
TEXT_FILE = "clip_text_vocab.json"

# Colours only stage 0 knows, each ≥ 84 RGB units from every world colour and from the grey background.
# Why: a shape reaches the encoder as its mask times (colour − background), so each colour shows the same
# shape as a different pattern. Seen in only the 7 colours the world allows per shape, the encoder can
# learn a "star" detector per colour, and a red star (never trained) then looks like no star at all.
# A real CLIP has seen every shape in hundreds of colours; these 8 extra, named only in the CLIP's own
# captions (the VLM never sees or asks them), push our small CLIP toward one detector for every colour.
EXTRA_COLORS = [Color("", "pink", (250, 140, 200)), Color("", "cyan", (40, 210, 220)),
                Color("", "brown", (120, 70, 20)), Color("", "lime", (160, 230, 40)),
                Color("", "navy", (20, 20, 120)), Color("", "magenta", (230, 40, 230)),
                Color("", "teal", (0, 120, 120)), Color("", "olive", (120, 120, 0))]


class CaptionVocab:
    """Word-level tokenizer for CLIP's text tower: the world's English captions use a few dozen words."""
    PAD, BOS, UNK, EOS = 0, 1, 2, 3  # EOS must not be id 2: CLIP treats eos_token_id == 2 as a legacy config

    def __init__(self, words):
        self.words = ["<pad>", "<bos>", "<unk>", "<eos>"] + sorted(set(words))
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def for_world(cls):
        words = ["there", "is", "are", "shape", "shapes", "a", "at", "the", "and", ":", ",", ".", *"123456789"]
        for c in COLORS + EXTRA_COLORS:
            words.append(c.en)
        for zh, en in SHAPES + SIZES:
            words.append(en)
        words += ["top", "bottom", "left", "right", "center"]
        return cls(words)

    def encode(self, text: str, max_len: int) -> list:
        ids = [self.BOS] + [self.ids.get(w, self.UNK) for w in WORD.findall(text.lower())][:max_len - 2] + [self.EOS]
        return ids + [self.PAD] * (max_len - len(ids))

    def batch(self, texts, max_len: int = 48):
        ids = torch.tensor([self.encode(t, max_len) for t in texts])  # (B, L)
        return ids, (ids != self.PAD).long()

    def trim(self, ids, mask):
        """Drop the padding columns no row of this batch needs (a CPU saves most of the text tower's work)."""
        n = int(mask.sum(1).max())
        return ids[:, :n], mask[:, :n]


def small_clip_config(vocab_size: int, width: int = 128, layers: int = 4, heads: int = 4, text_layers: int = 2,
                      text_width: int = 64):
    from transformers import CLIPConfig
    vision = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads,
                  image_size=IMAGE_SIZE, patch_size=CELL, num_channels=3, projection_dim=width)
    # the text tower reads ~40 words per caption (4× the 9 patches): kept narrow, it is only a training aid
    text = dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=text_layers,
                num_attention_heads=heads, max_position_embeddings=48, projection_dim=width,
                pad_token_id=CaptionVocab.PAD, bos_token_id=CaptionVocab.BOS, eos_token_id=CaptionVocab.EOS)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)


def twin(things, rng: random.Random, shape_twins: int = 1):
    """The same scene with exactly one attribute changed: the hard negative that forces fine detail.
    A shape change is drawn `shape_twins` times as often as each other kind: colour is easy for CLIP
    (a few pixels' average), shape is not, so more of the hard negatives can be about shape."""
    kinds = ["color", *["shape"] * shape_twins, "size", "move", "count"]
    while True:
        things2 = list(things)
        i = rng.randrange(len(things))
        t = things[i]
        kind = rng.choice(kinds)
        if kind == "color":
            things2[i] = replace(t, color=rng.choice([c for c in COLORS if c != t.color]))
        elif kind == "shape":
            things2[i] = replace(t, shape=rng.choice([s for s in SHAPES if s != t.shape]))
        elif kind == "size":
            things2[i] = replace(t, size=[s for s in SIZES if s != t.size][0])
        else:
            free = [c for c in range(9) if c not in {o.row * 3 + o.col for o in things}]
            if kind == "move" and free:
                c = rng.choice(free)
                things2[i] = replace(t, row=c // 3, col=c % 3)
            elif kind == "count" and len(things) > 1 and rng.random() < 0.5:
                del things2[i]
            elif kind == "count" and free and len(things) < 4:
                extra = random_scene(rng, 1, 1, allowed=allowed_in_training)[0]
                c = rng.choice(free)
                things2.append(replace(extra, row=c // 3, col=c % 3))
            else:
                continue
        things2.sort(key=lambda o: o.row * 3 + o.col)
        if all(allowed_in_training(o.color, o.shape) for o in things2) and scene_key(things2) != scene_key(things):
            return things2


def contrastive_pairs(sp, seed: int, shape_twins: int = 3, extra_colors: float = 0.5):
    """The fixed pool of (scene, twin) pairs stage 0 trains on, drawn once (rendering is slower than a training step
    on a CPU): one per training scene, then one per repainted copy (EXTRA_COLORS). Returns (pairs, n_world): the
    first n_world pairs are in world colours (the probe is fitted on those: a painted thing has no world colour)."""
    rng = random.Random(seed)
    held_out = {scene_key(s) for s in sp.test + sp.combo}
    world = [(s, twin(s, rng, shape_twins)) for s in sp.train]
    painted = painted_scenes(sp.train, extra_colors, seed, paint=lambda r: r.choice(EXTRA_COLORS))
    painted = [(s, twin(s, rng, shape_twins)) for s in painted]
    # A twin can land on a held-out picture (a repainted single thing painted back in a world colour often does):
    # such pairs are dropped, so the encoder never trains on a picture the VLM is scored on.
    world, painted = ([(a, b) for a, b in ps if scene_key(b) not in held_out] for ps in (world, painted))
    return world + painted, len(world)


@torch.no_grad()
def retrieval_accuracy(model, pixel_values, ids, mask, device) -> float:
    """Zero-shot image→text: the fraction of images whose own caption scores highest among all candidates."""
    model.eval()
    # the towers' pooled outputs through their projections (what get_*_features does, on every version)
    img = model.visual_projection(model.vision_model(pixel_values=pixel_values.to(device)).pooler_output)
    txt = model.text_projection(model.text_model(input_ids=ids.to(device), attention_mask=mask.to(device)).pooler_output)
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    return (img @ txt.T).argmax(-1).eq(torch.arange(len(img), device=device)).float().mean().item()


def cell_patch_index(n_patches: int) -> list:
    """For each of the 9 grid cells, the patch that holds the cell's centre (the cell's own patch on a 3×3 grid)."""
    g = int(round(n_patches ** 0.5))
    return [int((r + 0.5) / 3 * g) * g + int((c + 0.5) / 3 * g) for r in range(3) for c in range(3)]


def novel_cells(scenes) -> torch.Tensor:
    """(N, 9) bool: the grid cells that hold a thing of a never-trained colour+shape combination."""
    mask = torch.zeros(len(scenes), 9, dtype=torch.bool)
    for i, s in enumerate(scenes):
        for t in s:
            mask[i, t.row * 3 + t.col] = not allowed_in_training(t.color, t.shape)
    return mask


def linear_probe(train_feats, train_scenes, test_feats, test_scenes, combo_feats=None, combo_scenes=None,
                 steps: int = 300) -> dict:
    """Can a linear map read each cell's occupancy (= position), colour, shape and size — and, for an occupied
    cell, which cell it is — from the frozen patch features? If not, no projection (which is linear by default)
    can hand them to the LLM. With held-out combination pictures, the colour and shape maps are also scored on
    the things of never-trained combinations ("color_novel", "shape_novel"): features that tie a shape to the
    colours it was seen in fail there, and the VLM cannot do better on those things than its encoder allows."""
    idx = cell_patch_index(train_feats.shape[1])
    flat = lambda f: f[:, idx].reshape(-1, f.shape[-1])  # noqa: E731  (N, P, D) → (N·9, D), one row per grid cell
    xtr, xte = flat(train_feats), flat(test_feats)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ytr, yte = cell_labels(train_scenes).reshape(-1, 3), cell_labels(test_scenes).reshape(-1, 3)
    if combo_feats is not None:
        novel = novel_cells(combo_scenes).reshape(-1)
        xco, yco = ((flat(combo_feats) - mu) / sd)[novel], cell_labels(combo_scenes).reshape(-1, 3)[novel]
    out = {}
    names = ["color", "shape", "size"]
    # "position" = is this cell occupied; "cell" = which of the 9 cells an OCCUPIED patch is (what a question like
    # "what color is at the top left?" must find by content): a patch whose content drowns its position embedding fails it.
    cell_tr, cell_te = torch.arange(9).repeat(len(train_scenes)) + 1, torch.arange(9).repeat(len(test_scenes)) + 1
    for j, name in enumerate(["position"] + names + ["cell"]):
        if name == "position":
            ya, yb = (ytr[:, 0] > 0).long(), (yte[:, 0] > 0).long()
        elif name == "cell":
            ya, yb = cell_tr * (ytr[:, 0] > 0), cell_te * (yte[:, 0] > 0)
        else:
            ya, yb = ytr[:, j - 1], yte[:, j - 1]
        keep_a, keep_b = (slice(None), slice(None)) if name == "position" else (ya > 0, yb > 0)  # attributes: occupied cells
        w = torch.zeros(xtr.shape[1], int(max(ya.max(), yb.max())) + 1, requires_grad=True)
        b = torch.zeros(w.shape[1], requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(xtr[keep_a] @ w + b, ya[keep_a]).backward()
            opt.step()
        with torch.no_grad():
            out[name] = round((xte[keep_b] @ w + b).argmax(-1).eq(yb[keep_b]).float().mean().item(), 4)
            if combo_feats is not None and name in ("color", "shape"):
                out[f"{name}_novel"] = round((xco @ w + b).argmax(-1).eq(yco[:, j - 1]).float().mean().item(), 4)
    return out


def train_clip(out=CLIP_DIR, steps: int = 1500, batch_pairs: int = 128, lr: float = 2e-3, width: int = 128,
               layers: int = 4, n_images: int = 8000, seed: int = 1337, device: str = "cpu", log=True,
               splits=None, shape_twins: int = 3, extra_colors: float = 0.5, epochs: float | None = None) -> dict:
    """Train, evaluate (retrieval + probe), save. Returns the metrics. With `epochs`, the steps are that many
    passes over the contrastive pairs (each step draws `batch_pairs` of them)."""
    from transformers import CLIPModel
    out, t0 = pathlib.Path(out), time.perf_counter()
    seed_everything(seed)
    dev = pick_device(device)
    vocab = CaptionVocab.for_world()
    model = CLIPModel(small_clip_config(len(vocab.words), width, layers)).to(dev)
    proc = new_image_processor(IMAGE_SIZE)
    sp = splits or world_splits(n_train=n_images, seed=seed)
    pairs, n_world = contrastive_pairs(sp, seed, shape_twins, extra_colors)
    if epochs:
        steps = max(1, round(epochs * len(pairs) / batch_pairs))
    scenes = [s for p in pairs for s in p]
    pix = preprocess(proc, [render_scene(s) for s in scenes])                    # (2N, 3, 63, 63)
    ids, mask = vocab.batch([describe_scene(s, "en") for s in scenes])            # (2N, L)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.98))
    log_dir = out.parent / f".{out.name}.log"
    logger = RunLogger(log_dir, steps, desc="stage 0: CLIP", enabled=log)
    n_pairs = len(pairs)
    for step in range(steps):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, max_lr=lr, total_steps=steps, warmup_steps=min(100, steps // 10))
        pick = torch.randint(0, n_pairs, (batch_pairs,))
        rows = torch.stack([2 * pick, 2 * pick + 1], 1).reshape(-1)              # a scene and its twin side by side
        bid, bmask = vocab.trim(ids[rows], mask[rows])
        o = model(input_ids=bid.to(dev), attention_mask=bmask.to(dev), pixel_values=pix[rows].to(dev))
        labels = torch.arange(len(rows), device=dev)
        # symmetric InfoNCE: each image must pick its caption among the batch's, and each caption its image
        loss = (F.cross_entropy(o.logits_per_image, labels) + F.cross_entropy(o.logits_per_text, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP caps the temperature at 100
        logger.train_step(step, loss.item(), opt.param_groups[0]["lr"])
    logger.close()
    test_pix = preprocess(proc, [render_scene(s) for s in sp.test])
    tid, tmask = vocab.batch([describe_scene(s, "en") for s in sp.test])
    acc = retrieval_accuracy(model, test_pix, tid, tmask, dev)
    combo_pix = preprocess(proc, [render_scene(s) for s in sp.combo])
    cid, cmask = vocab.batch([describe_scene(s, "en") for s in sp.combo])
    acc_combo = retrieval_accuracy(model, combo_pix, cid, cmask, dev)
    # save: the whole CLIPModel (so its text tower can still score captions), the image processor and the run's
    # logs, all at once (a kill midway leaves the previous CLIP as it was)
    with atomic_folder(out) as tmp:
        model.cpu().save_pretrained(tmp)
        proc.save_pretrained(tmp)
        (tmp / TEXT_FILE).write_text(json.dumps(vocab.words))
        for f in (log_dir.iterdir() if log_dir.exists() else ()):  # metrics.jsonl and loss_curve.png
            f.replace(tmp / f.name)
    if log_dir.exists():
        log_dir.rmdir()
    from transformers import CLIPVisionModel
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # the unused text tower is expected when loading only the vision tower
    enc = CLIPVisionModel.from_pretrained(out).eval()  # the VLM's own loading call
    probe_n = min(3000, n_world)  # the first scene of each pair, fitted on training pictures, scored on held-out ones
    probe = {layer: linear_probe(patch_features(enc, pix[0:2 * probe_n:2], layer), [a for a, _ in pairs[:probe_n]],
                                 patch_features(enc, test_pix, layer), sp.test,
                                 patch_features(enc, combo_pix, layer), sp.combo) for layer in (-1, -2)}
    metrics = {"clip_retrieval_acc": round(acc, 4), "clip_retrieval_acc_combo": round(acc_combo, 4),
               "retrieval_candidates": len(sp.test), "probe_layer_-2": probe[-2], "probe_layer_-1": probe[-1],
               "clip_params": sum(p.numel() for p in model.parameters()),
               "clip_final_loss": round(loss.item(), 4), "clip_wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
