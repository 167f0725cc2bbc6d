"""Bench: a training step with cached frozen-encoder features vs running the frozen encoder every step.

    python bench.py                 # small CLIP (9 patches) and the full-size ViT-B/16 architecture (196 patches)

The encoder is frozen, so its output for a picture never changes: computing it once and reading it back
removes the encoder from every step. ViT-B/16's weights need not be downloaded for a speed figure: the
same architecture with random weights costs the same arithmetic.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import random
import time

import torch

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import pick_device, seed_everything
from common.training import print_summary
from common.world import random_scene
from step1_tokenizer.model import course_tokenizer
from step2_gpt.model import GPT, GPTConfig
from step6_vlm.data import caption_messages, render_scene
from step6_vlm.loop import collate
from step6_vlm.model import VLM, VLMConfig, apply_freeze, build_example, image_token_id


def time_steps(vlm, x, y, pv, feats, live: bool, steps: int, device) -> float:
    """Mean seconds per optimizer step (forward, backward, AdamW) after one warm-up step."""
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        if live:   # the encoder runs on the pixels (under no_grad: it is frozen, but its forward still costs)
            _, loss = vlm(x, y, pixel_values=pv)
        else:      # features read from the cache
            _, loss = vlm(x, y, image_features=feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def bench_encoder(name, vision, size, tok, gpt_cfg, batch, steps, device) -> dict:
    from step6_vlm.vision import patch_features
    vc = vision.config
    n_patches = (vc.image_size // vc.patch_size) ** 2
    vlm = VLM(GPT(gpt_cfg), VLMConfig(name, vc.hidden_size, n_patches, vc.image_size, image_token_id(tok)), vision).to(device)
    apply_freeze(vlm, "sft")
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(batch)]
    x, y, _ = collate([(i, *build_example(vlm, tok, caption_messages(s, "zh"))) for i, s in enumerate(scenes)], tok.pad_id)
    mean, std = torch.tensor([0.481, 0.458, 0.408])[:, None, None], torch.tensor([0.269, 0.261, 0.276])[:, None, None]
    pv = torch.stack([(torch.tensor(list(render_scene(s, size).getdata()), dtype=torch.float32).T.reshape(3, size, size)
                       / 255 - mean) / std for s in scenes]).to(device)   # (B, 3, H, W), CLIP-normalised
    feats = patch_features(vision, pv).to(device)                      # (B, P, D): what the cache holds
    x, y = x.to(device), y.to(device)
    live = time_steps(vlm, x, y, pv, feats, True, steps, device)
    cached = time_steps(vlm, x, y, pv, feats, False, steps, device)
    return {"encoder": name, "patches": n_patches, "width": vc.hidden_size, "seq_len": x.shape[1], "batch": batch,
            "live_ms": round(live * 1000, 1), "cached_ms": round(cached * 1000, 1), "speedup": round(live / cached, 2)}


def main():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    p = course_parser("Bench: cached vs live frozen-encoder features (特征缓存的速度)", "device", "batch_size", "seed",
                      batch_size=8)
    p.add_argument("--steps", type=int, default=4, help="计时步数 timed steps per setting")
    args = p.parse_args()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    tok = course_tokenizer(fallback=True)
    gpt_cfg = GPTConfig.preset("tiny", vocab_size=tok.vocab_size)   # the course's tiny GPT (as runs/pretrain)
    rows = []
    clip = RUNS_DIR / "clip"
    if (clip / "config.json").is_file():
        small = CLIPVisionModel.from_pretrained(clip)
    else:
        from step6_vlm.small_clip import small_clip_config
        small = CLIPVisionModel(small_clip_config(64).vision_config)
    rows.append(bench_encoder("small CLIP (stage 0)", small.eval().requires_grad_(False).to(dev), 63, tok, gpt_cfg,
                              args.batch_size, args.steps, dev))
    b16 = CLIPVisionModel(CLIPVisionConfig(patch_size=16)).eval().requires_grad_(False).to(dev)  # random weights
    rows.append(bench_encoder("ViT-B/16 architecture", b16, 224, tok, gpt_cfg, args.batch_size, args.steps, dev))
    print(f"\n{'encoder':<24}{'patches':>8}{'width':>7}{'seq':>6}{'live ms/step':>14}{'cached ms/step':>16}{'speedup':>9}")
    for r in rows:
        print(f"{r['encoder']:<24}{r['patches']:>8}{r['width']:>7}{r['seq_len']:>6}{r['live_ms']:>14}{r['cached_ms']:>16}"
              f"{r['speedup']:>8}×")
    print_summary(device=str(dev), batch=args.batch_size, small_clip=rows[0], vit_b16=rows[1],
                  speedup_vit_b16=rows[1]["speedup"], speedup_small=rows[0]["speedup"])


if __name__ == "__main__":
    run(main)
