"""Bench: (1) a training step with cached frozen-encoder features vs running the frozen encoder every step;
(2) with --serve, the server (server.py): time to first token, tokens/s, and concurrent clients.

    python lab/bench.py                 # small CLIP (9 patches) and the full-size ViT-B/16 architecture (196 patches)
    python lab/bench.py --serve         # the newest checkpoint (runs/vlm_sft, vlm_pretrain, rlhf, sft, pretrain)
    python lab/bench.py --serve --init ../runs/sft   # a given one (relative to where you run this)
    python lab/bench.py --serve --quick # a few short requests; an untrained GPT when runs/ holds no checkpoint

(1) The encoder is frozen, so its output for a picture never changes: computing it once and reading it back
removes the encoder from every step. ViT-B/16's weights need not be downloaded for a speed figure: the
same architecture with random weights costs the same arithmetic.
Last line: {"device", "batch", "small_clip", "vit_b16", "speedup_vit_b16", "speedup_small"} (the two rows are
dicts: encoder, patches, width, seq_len, batch, live_ms, cached_ms, speedup).

(2) The server runs in a thread of this process on 127.0.0.1 and is asked over HTTP, as a client would; greedy
(temperature 0), a VLM gets test.jpg with every question. Each question is first asked alone (streamed), three
times: the median time to its first text is the time to first token; the decode speed is the tokens after the
first over the seconds after the first text, summed over those replies (the course's models answer in a few
tokens, so one reply alone is too short to time). Then all clients ask at once; generation is behind one lock, so they queue,
and every answer must equal the one its question got alone.
Last line: {"mode": "serve", "model", "vision", "device", "ttft_p50_ms", "reply_tokens", "tokens_per_s",
"clients", "latency_p50_s", "latency_p95_s", "correct"} (reply_tokens: the lone replies' mean length; correct: how
many concurrent answers equal the lone ones).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import base64
import json
import random
import statistics
import threading
import time
import urllib.error
import urllib.request

import torch

from common import RUNS_DIR
from common.cli import course_parser, run
from common.errors import CourseError
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


# ----------------------------------------------------------------------------------------------------
# --serve: the HTTP server, measured from the client's side

QUESTIONS = ["描述这张图片", "图里有几个东西？", "What colour is the circle?", "图片里有什么形状？",
             "Describe the picture.", "最左边是什么？", "How many things are there?", "有红色的东西吗？"]
TEXT_QUESTIONS = ["2加3等于几？", "What is 4 plus 1?", "小明有5个苹果，送出2个。小明还剩几个苹果？", "你好",
                  "把“红色的圆形”翻译成英文。", "Who are you?", "Translate 蓝色的方块 into Chinese.", "小猫在哪里？"]
IMAGE = pathlib.Path(__file__).resolve().parents[1] / "test.jpg"


def serving_engine(args, dev):
    """--init, else the newest checkpoint; with --quick and none at all, an untrained GPT (its answers mean nothing)."""
    from step2_gpt.model import GPT_STEPS, quick_or_load_gpt
    from step6_vlm.server import VLM_STEPS, Engine, newest_checkpoint
    path = pathlib.Path(args.init) if args.init else newest_checkpoint(VLM_STEPS + GPT_STEPS)
    if path is not None:
        return Engine.load(path, dev)
    if not args.quick:
        raise CourseError("no checkpoint in runs/ to serve; make one (python step6_vlm/train.py or "
                          "python step4_sft/train.py), pass --init FOLDER, or run with --quick")
    gpt, tok, _ = quick_or_load_gpt(RUNS_DIR / "none", quick=True)
    return Engine(gpt.to(dev).eval(), tok, "untrained")


def streamed(url: str, messages: list, max_tokens: int) -> dict:
    """One streamed request read as it arrives: seconds to its first text and to its end, the text, the tokens."""
    body = {"messages": messages, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
            "max_tokens": max_tokens}
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0, first, text, tokens = time.perf_counter(), None, "", 0
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            for line in r:   # server-sent events, one `data: {...}` line each
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                j = json.loads(line[6:])
                if "error" in j:
                    raise CourseError(f"the server failed: {j['error']['message']}")
                tokens = j["usage"]["completion_tokens"] if j.get("usage") else tokens
                piece = j["choices"][0]["delta"].get("content") if j["choices"] else None
                if piece:
                    first = first or time.perf_counter()
                    text += piece
    except urllib.error.HTTPError as e:   # a refused request (e.g. --max-tokens beyond the context): say why
        raise CourseError(f"the server refused the request: {json.loads(e.read())['error']['message']}") from None
    end = time.perf_counter()
    first = first or end   # an empty answer: its "first text" is its end
    return {"ttft": first - t0, "total": end - t0, "after_first": end - first, "text": text, "tokens": tokens}


def bench_serving(engine, clients: int, max_tokens: int, repeats: int = 3) -> dict:
    from step6_vlm.server import make_app, serve_in_thread
    picture = "data:image/jpeg;base64," + base64.b64encode(IMAGE.read_bytes()).decode()

    def messages(q):
        if not engine.vision:
            return [{"role": "user", "content": q}]
        return [{"role": "user", "content": [{"type": "text", "text": q},
                                             {"type": "image_url", "image_url": {"url": picture}}]}]

    qs = QUESTIONS if engine.vision else TEXT_QUESTIONS
    asks = [messages(qs[i % len(qs)]) for i in range(clients)]
    served = serve_in_thread(make_app(engine))
    try:
        streamed(served.url, asks[0], 4)   # warm-up: the first request pays for lazy initialisation
        rounds = [[streamed(served.url, m, max_tokens) for m in asks] for _ in range(repeats)]
        alone = [r for rnd in rounds for r in rnd]
        together, start = [None] * clients, threading.Barrier(clients)

        def client(i):
            start.wait()
            try:
                together[i] = streamed(served.url, asks[i], max_tokens)
            except CourseError as e:
                together[i] = e

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        served.stop()
    failed = next((r for r in together if isinstance(r, CourseError)), None)
    if failed:
        raise failed
    lat, decode_s = sorted(r["total"] for r in together), sum(r["after_first"] for r in alone)
    p95 = statistics.quantiles(lat, n=20, method="inclusive")[18] if clients > 1 else lat[0]
    return {"mode": "serve", "model": engine.name, "vision": engine.vision,
            "ttft_p50_ms": round(statistics.median(r["ttft"] for r in alone) * 1000, 1),
            "reply_tokens": round(sum(r["tokens"] for r in alone) / len(alone), 1),
            "tokens_per_s": round(sum(max(r["tokens"] - 1, 0) for r in alone) / decode_s, 1) if decode_s else None,
            "clients": clients, "latency_p50_s": round(statistics.median(lat), 2), "latency_p95_s": round(p95, 2),
            "correct": sum(t["text"] == a["text"] for t, a in zip(together, rounds[0]))}


def main():
    p = course_parser("Bench: cached vs live frozen-encoder features (特征缓存的速度); --serve: the server (部署的速度)",
                      "device", "batch_size", "seed", "init", "quick", batch_size=8)
    p.add_argument("--steps", type=int, default=4, help="计时步数 timed steps per setting")
    p.add_argument("--serve", action="store_true", help="测服务 time the server instead: first token, tokens/s, clients")
    p.add_argument("--clients", type=int, default=8, help="并发客户端 concurrent clients (--serve)")
    p.add_argument("--max-tokens", type=int, default=64, help="每个回答的上限 max_tokens per question (--serve)")
    args = p.parse_args()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    if args.serve:
        if args.quick:
            args.clients, args.max_tokens = min(args.clients, 3), 8
        if args.clients < 1 or args.max_tokens < 1:
            raise CourseError("--clients and --max-tokens must be at least 1")
        r = bench_serving(serving_engine(args, dev), args.clients, args.max_tokens, 1 if args.quick else 3)
        kind = "text + images" if r["vision"] else "text only"
        print(f"\n{'model':<14}{'kind':<15}{'TTFT p50 ms':>12}{'reply tok':>10}{'tok/s':>8}"
              f"{'clients':>9}{'p50 s':>8}{'p95 s':>8}{'correct':>9}")
        print(f"{r['model']:<14}{kind:<15}{r['ttft_p50_ms']:>12}{r['reply_tokens']:>10}{str(r['tokens_per_s']):>8}"
              f"{r['clients']:>9}{r['latency_p50_s']:>8}{r['latency_p95_s']:>8}{r['correct']:>6}/{r['clients']}")
        print_summary(device=str(dev), **r)
        return
    from transformers import CLIPVisionConfig, CLIPVisionModel
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
