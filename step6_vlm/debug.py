"""Check the image path on one batch: the checks to run when a VLM "cannot see" (图像识别调试).

    python debug.py                        # a fresh stage-1 model: the newest LLM (runs/rlhf, …) + runs/clip
    python debug.py --init runs/vlm_sft    # a trained checkpoint
    python debug.py --image-tokens first   # the first-patch bug: 1 of the P patch features reaches the LLM
    python debug.py --image-loss           # a tempting "fix": loss on the image positions too
    python debug.py --quick                # tiny random model, no runs/ needed (seconds)

Prints: where the image tokens sit, placeholders vs features, feature norms before/after the projection
(next to the word embeddings' norm), the projection's gradient norm after one step, the loss mask token by
token, (6) whether the answer position looks at the patch a question asks about — the check that tells
"the model reads the picture as a whole" (count right, colour/shape/position guessed) from "it finds the cell" —
and (7) the same for "where is the red star?", where the patch must be found by its content among the other things.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import json
import random

import torch

from common.cli import course_parser, run
from common.device import pick_device, seed_everything
from common.errors import CourseError
from common.training import print_summary
from step6_vlm.data import caption_messages, qa_examples, user_turn, world_splits
from step6_vlm.recipe import RECIPE  # the freeze train.py uses, so the checks see the same gradients
from step6_vlm.loop import collate, encode
from step6_vlm.model import VLM, VLMConfig, apply_freeze, image_token_id, load_vlm
from step6_vlm.pitfalls import IMAGE_TOKEN_MODES, with_image_loss


def image_spans(row: list, image_id: int) -> list:
    """[(start, end)] of the runs of image positions in one sequence (end exclusive)."""
    spans, start = [], None
    for k, t in enumerate(row + [None]):
        if t == image_id and start is None:
            start = k
        elif t != image_id and start is not None:
            spans.append((start, k))
            start = None
    return spans


def show_token(tok, t: int) -> str:
    """A token quoted, so leading spaces and newlines are visible: "\\n", " are"."""
    return json.dumps(tok.token_str(t), ensure_ascii=False) if t >= 0 else "(end)"


def loss_mask_lines(tok, x: torch.Tensor, y: torch.Tensor, image_id: int) -> list:
    """One sequence, token by token: input token → target token, and whether that position is in the loss.
    A run of image positions is one line (its count and whether any of it is in the loss)."""
    xs, ys = x.tolist(), y.tolist()
    while xs and xs[-1] == tok.pad_id and ys[-1] == -100:  # right padding is not part of the example
        xs, ys = xs[:-1], ys[:-1]
    lines, k = [f"{'pos':>7}  {'input':<14} {'→ target':<16} loss"], 0
    while k < len(xs):
        if xs[k] == image_id:
            e = k
            while e < len(xs) and xs[e] == image_id:
                e += 1
            inloss = sum(ys[j] != -100 for j in range(k, e))
            lines.append(f"{f'{k}-{e - 1}':>7}  {f'<image> ×{e - k}':<14} {'(image tokens)':<16} {'✓ ' + str(inloss) if inloss else '·'}")
            k = e
            continue
        nxt = ys[k] if ys[k] != -100 else xs[k + 1] if k + 1 < len(xs) else -1  # the next token, in the loss or not
        lines.append(f"{k:>7}  {show_token(tok, xs[k]):<14} {'→ ' + show_token(tok, nxt):<16} {'✓' if ys[k] != -100 else '·'}")
        k += 1
    return lines


def debug_batch(vlm: VLM, tok, examples, feats: torch.Tensor, stage: str = "pretrain", lr: float = 1e-3,
                stage1_llm: str = RECIPE.stage1_llm, last_n: int = RECIPE.last_n, device="cpu") -> dict:
    """The image-path figures for one batch of encoded examples [(image_index, ids, labels)] and features (N, P, D).
    Takes one AdamW step on what the freeze table trains, so the projection's change is measured too."""
    img = vlm.config.image_token_id
    x, y, idx = collate(examples, tok.pad_id)                            # (B, T), (B, T), (B,)
    f = feats[idx].to(device)                                            # (B, P, D): one picture per sequence
    x, y = x.to(device), y.to(device)
    n_slots = int((x == img).sum())
    counts = apply_freeze(vlm, stage, stage1_llm, last_n)
    vlm.train()
    emb = vlm.image_embeds(f)                                            # (B, n, C) projected image tokens
    text = vlm.llm.embed(x)[x != img]                                    # (M, C) word embeddings of the batch
    figures = {
        "sequences": len(examples), "images": f.shape[0], "patches_per_image": f.shape[1],
        "image_tokens_per_image": vlm.tokens_per_image, "placeholders": n_slots,
        "features_available": f.shape[0] * f.shape[1], "features_used": emb.shape[0] * emb.shape[1],
        "image_positions_seq0": image_spans(x[0].tolist(), img),
        "feature_norm": round(f.norm(dim=-1).mean().item(), 3),          # mean L2 norm of one patch feature
        "projected_norm": round(emb.norm(dim=-1).mean().item(), 3),     # … after the projection
        "text_embedding_norm": round(text.norm(dim=-1).mean().item(), 3),
        "loss_positions": int((y != -100).sum()),
        "loss_positions_on_image": int((y == img).sum()),               # targets that are <image> placeholders
        "trainable": counts,
    }
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    before = [p.detach().clone() for p in vlm.projection.parameters()]
    _, loss = vlm(x, y, image_features=f)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in vlm.projection.parameters() if p.grad is not None]
    figures["loss"] = round(loss.item(), 4)
    figures["projection_grad_norm"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads))) if grads else 0.0
    opt.step()
    figures["projection_update_norm"] = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum()
                                                             for p, b in zip(vlm.projection.parameters(), before))))
    figures["loss_mask_seq0"] = loss_mask_lines(tok, x[0].cpu(), y[0].cpu(), img)
    return figures


def last_query_attention(attn, h: torch.Tensor, cos, sin) -> torch.Tensor:
    """Attention probabilities (H, T) of the LAST position of one sequence, for one attention module given its
    normalized input h (1, T, C): step 2's own q and k (attn.project), the softmax that SDPA keeps to itself."""
    q, k, _ = attn.project(h, cos, sin)                                    # (1, H, T, hd), (1, Hkv, T, hd)
    k = k.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)          # (1, H, T, hd)
    return ((q[0, :, -1:] @ k[0].transpose(-1, -2)) / attn.hd ** 0.5).softmax(-1)[:, 0]  # (H, T)


@torch.no_grad()
def asked_cell_attention(vlm: VLM, tok, scenes, feats: torch.Tensor, seed: int = 0, device="cpu", by: str = "cell") -> dict:
    """How much of the answer position's attention lands on the patch a question is about? by="cell": colour or
    shape questions that name the cell ("What color is the shape at the top left?"); by="content": position
    questions that name the thing ("Where is the red star?", pictures with ≥ 2 things), seen from the position
    that predicts the cell word (after "The red star is at the"), where the other occupied patches are the
    distractors. Per layer, the best head's share of all attention, of the attention on image tokens (chance:
    1 of the P patches) and, for by="content", its mean on each other occupied patch."""
    from step6_vlm.data import question, unique_things
    from step6_vlm.small_clip import cell_patch_index
    from step6_vlm.model import build_example
    rng = random.Random(seed)
    L, H, P = vlm.llm.config.n_layer, vlm.llm.config.n_head, vlm.config.n_patches
    patch_of = cell_patch_index(P)                                             # grid cell → its patch
    on_cell, on_image, on_other, n = torch.zeros(L, H), torch.zeros(L, H), torch.zeros(L, H), 0
    vlm.eval()
    for i, s in enumerate(scenes):
        if by == "cell":
            t = rng.choice(s)
            q, _ = question(rng.choice(["color", "shape"]), s, rng, rng.choice(["zh", "en"]), target=t)
        else:
            if len(s) < 2 or not unique_things(s):
                continue
            t = rng.choice(unique_things(s))
            lang = rng.choice(["zh", "en"])
            q, answer = question("position", s, rng, lang, target=t)
            cell_word = t.position[0] if lang == "zh" else t.position[1]
            restated = answer[:answer.rindex(cell_word)].rstrip()               # "The red star is at the"
        ids, _ = build_example(vlm, tok, [{"role": "user", "content": user_turn(q, vlm.config.layout)}], add_generation_prompt=True)
        if by == "content":
            ids = ids + tok.encode(restated)     # look from where the cell word is predicted, after the restatement
        x = torch.tensor([ids], device=device)
        h = vlm.splice(x, vlm.image_embeds(feats[i:i + 1].to(device)))       # (1, T, C)
        start = ids.index(vlm.config.image_token_id)
        cell = start + patch_of[t.row * 3 + t.col]
        others = [start + patch_of[o.row * 3 + o.col] for o in s if o is not t]
        cos, sin = vlm.llm.rope_cos[:h.shape[1]], vlm.llm.rope_sin[:h.shape[1]]
        for layer, block in enumerate(vlm.llm.blocks):
            p = last_query_attention(block.attn, block.attn_norm(h), cos, sin)  # (H, T)
            on_cell[layer] += p[:, cell].cpu()
            on_image[layer] += p[:, start:start + P].sum(-1).cpu()
            if others:
                on_other[layer] += p[:, others].mean(-1).cpu()
            h = block(h, cos, sin)
        n += 1
    on_cell, on_image, on_other = on_cell / max(n, 1), on_image / max(n, 1), on_other / max(n, 1)
    best = on_cell.argmax(1)                                                   # (L,) the head that looks most
    return {"questions": n, "by": by, "chance_share_of_image": round(1 / P, 4),
            "per_layer": [{"layer": l, "head": int(best[l]), "on_cell": round(float(on_cell[l, best[l]]), 4),
                           "on_image": round(float(on_image[l, best[l]]), 4),
                           "share_of_image": round(float(on_cell[l, best[l]] / on_image[l, best[l]].clamp_min(1e-9)), 4)}
                          | ({"on_each_other_thing": round(float(on_other[l, best[l]]), 4)} if by == "content" else {})
                          for l in range(L)]}


def report(fig: dict) -> str:
    """The figures as a student reads them, with what each one says."""
    ok = lambda good: "OK " if good else "!! "  # noqa: E731
    P, n = fig["patches_per_image"], fig["image_tokens_per_image"]
    lines = [
        f"1. image-token positions (sequence 0): {fig['image_positions_seq0']}  [start, end) — one block per <image>",
        f"2. {ok(fig['placeholders'] == fig['features_used'])}placeholders {fig['placeholders']} = features spliced in "
        f"{fig['features_used']} ({fig['images']} images × {n})",
        f"   {ok(n == P)}features used {fig['features_used']} of {fig['features_available']} available ({n} of {P} patches per image)"
        + ("" if n == P else "  ← the LLM never sees the other patches (only the first patch)" if n == 1 else ""),
        f"3. feature norm {fig['feature_norm']} → projected {fig['projected_norm']}  (word embeddings: "
        f"{fig['text_embedding_norm']}; far apart means the image tokens shout or whisper next to the words)",
        f"4. {ok(fig['projection_grad_norm'] > 0)}projection gradient norm after one backward: {fig['projection_grad_norm']:.3e}; "
        f"its weights moved by {fig['projection_update_norm']:.3e} in one step",
        f"   loss over {fig['loss_positions']} positions, {fig['loss_positions_on_image']} of them predict an image token "
        f"(the answer's loss reaches the projection through attention: no image-position loss is needed)",
        f"   trainable parameters: {fig['trainable']}",
        "5. loss mask over sequence 0 (✓ = this position's next-token prediction is in the loss):",
        *("   " + ln for ln in fig["loss_mask_seq0"]),
    ]
    look = fig.get("asked_cell_attention")
    if look:
        lines.append(f"6. where the answer position looks, {look['questions']} colour/shape questions about one cell "
                     f"(chance: {look['chance_share_of_image']:.0%} of the image attention on the asked patch):")
        for r in look["per_layer"]:
            good = r["share_of_image"] > 3 * look["chance_share_of_image"] and r["on_image"] > 0.2
            lines.append(f"   {ok(good)}layer {r['layer']} head {r['head']}: {r['on_cell']:.0%} of its attention on the asked "
                         f"patch, {r['on_image']:.0%} on the image ({r['share_of_image']:.0%} of that on the asked patch)")
    look = fig.get("named_thing_attention")
    if look:
        lines.append(f"7. the same for {look['questions']} position questions (\"Where is the red star?\", ≥ 2 things), from the "
                     f"position that says the cell (after \"The red star is at the\"): does it pick the named thing's patch "
                     f"over the other things' patches?")
        for r in look["per_layer"]:
            good = r["on_cell"] > 2 * r["on_each_other_thing"] and r["on_image"] > 0.2
            lines.append(f"   {ok(good)}layer {r['layer']} head {r['head']}: {r['on_cell']:.0%} on the named thing's patch, "
                         f"{r['on_each_other_thing']:.0%} on each other thing's patch, {r['on_image']:.0%} on the image")
    return "\n".join(lines)


def quick_parts(scenes, device="cpu", seed: int = 0):
    """A tokenizer, an untrained 2-layer GPT, and the features (N, 9, 32) of `scenes` from a random small CLIP:
    everything without runs/ (tests and --quick). Returns (tok, gpt, cfg, feats)."""
    from transformers import CLIPVisionModel
    from step1_tokenizer.model import course_tokenizer
    from step2_gpt.model import GPT, GPTConfig
    from step6_vlm.data import render_scene
    from step6_vlm.small_clip import CaptionVocab, small_clip_config
    from step6_vlm.vision import new_image_processor, patch_features, preprocess
    tok = course_tokenizer(fallback=True, say=None)
    torch.manual_seed(seed)
    vcfg = small_clip_config(len(CaptionVocab.for_world().words), width=32, layers=2, heads=2).vision_config
    vision = CLIPVisionModel(vcfg).eval().to(device)
    proc = new_image_processor(63)
    feats = patch_features(vision, preprocess(proc, [render_scene(s) for s in scenes]).to(device), -2)  # (N, 9, 32)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=2, n_embd=64))
    cfg = VLMConfig("random small CLIP", vcfg.hidden_size, feats.shape[1], 63, image_token_id(tok))
    return tok, gpt, cfg, feats


def examples_for(vlm, tok, scenes, stage: str, seed: int, n: int) -> list:
    """The first n training sequences of `stage`, one per picture in order. A picture whose one question has
    no single answer ("where is the red star?" with two red stars) gives none, so the next picture is used."""
    rng = random.Random(seed)
    layout = vlm.config.layout
    convs = []
    for i, s in enumerate(scenes):
        if len(convs) == n:
            break
        if stage == "pretrain":
            convs.append((i, caption_messages(s, rng.choice(["zh", "en"]), layout)))
        else:
            convs += [(i, c) for c in qa_examples(s, rng, layout, per_image=1)]
    return encode(vlm, tok, convs)


def main():
    p = course_parser("Debug the image path on one batch (the image path's checks)", "device", "batch_size", "lr", "seed",
                      "init", "quick", batch_size=8, lr=1e-3)
    p.add_argument("--stage", default="pretrain", choices=("pretrain", "sft"), help="阶段 which freeze row and which data")
    p.add_argument("--image-tokens", default="all", choices=tuple(IMAGE_TOKEN_MODES),
                   help="图像token what reaches the LLM of a fresh model: every patch, the first (the bug) or their mean")
    p.add_argument("--projector", default="linear", choices=("linear", "mlp"), help="投影层 of a fresh model")
    p.add_argument("--llm", default=None, help="起点语言模型 LLM of a fresh VLM (default runs/rlhf, else runs/sft, else runs/pretrain)")
    p.add_argument("--image-loss", action="store_true", help="图像位置也算loss put the image positions in the loss")
    args = p.parse_args()
    if args.init and args.image_tokens != "all":
        raise CourseError("--image-tokens builds a fresh model with that mistake; it does not change a trained --init checkpoint")
    VLMClass = IMAGE_TOKEN_MODES[args.image_tokens]
    seed_everything(args.seed)
    dev = pick_device(args.device)
    if args.quick:
        scenes = world_splits(args.batch_size, 0, 0, seed=args.seed).train
        tok, gpt, cfg, feats = quick_parts(scenes, dev, args.seed)
        cfg.projector = args.projector
        vlm, src = VLMClass(gpt, cfg).to(dev), "tiny random model (--quick)"
    else:
        from step6_vlm.loop import world_features
        from step6_vlm.vision import default_vision_encoder, image_size, load_vision_encoder
        if args.init:  # a trained VLM checkpoint
            vlm, tok, _ = load_vlm(args.init, dev, with_vision=False)
            src = args.init
        else:  # a fresh VLM, as stage 1 starts: the course LLM + a new projection
            from step6_vlm.loop import init_llm
            gpt, tok, src = init_llm(args.llm)
            enc = default_vision_encoder()
            vision, proc = load_vision_encoder(enc, dev)
            vc = vision.config
            cfg = VLMConfig(enc, vc.hidden_size, (vc.image_size // vc.patch_size) ** 2, vc.image_size, image_token_id(tok),
                            args.projector)
            vlm, src = VLMClass(gpt, cfg).to(dev), f"fresh VLM: LLM {src}, encoder {enc}"
        scenes = world_splits(8000, 400, 300, seed=args.seed).train[:max(args.batch_size, 64)]  # train.py's pictures: cached; 64 for checks 6 and 7
        vision, proc = load_vision_encoder(vlm.config.vision_encoder, dev)
        feats, _ = world_features(vision, proc, scenes, vlm.config.vision_encoder, vlm.config.feature_layer, image_size(proc))
    ex = examples_for(vlm, tok, scenes, args.stage, args.seed, args.batch_size)
    if args.image_loss:
        ex = with_image_loss(ex, vlm.config.image_token_id)
    # checks 6 and 7 first: debug_batch's training step changes the model. They need one token per patch.
    looks = ({"asked_cell_attention": asked_cell_attention(vlm, tok, scenes, feats, args.seed, dev),
              "named_thing_attention": asked_cell_attention(vlm, tok, scenes, feats, args.seed, dev, by="content")}
             if vlm.tokens_per_image == vlm.config.n_patches else {})
    fig = debug_batch(vlm, tok, ex, feats, args.stage, args.lr, device=dev) | looks
    print(f"== image path check on one batch of {len(ex)} ({args.stage} data), model: {src}\n", file=sys.stderr)
    print(report(fig), file=sys.stderr)
    print_summary(**{k: v for k, v in fig.items() if k != "loss_mask_seq0"})


if __name__ == "__main__":
    run(main)
