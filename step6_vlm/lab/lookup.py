"""The binding problem in miniature (绑定问题的最小实验): why "What color is the shape at the top left?" is
learned so much later than "How many shapes are there?", and what QK-norm changes.

    python lookup.py                  # a fresh 4×256 GPT without and with QK-norm, same data, same seed
    python lookup.py --qk-norm only   # one of them
    python lookup.py --tail 0         # the cell word right before the answer: no plateau at all
    python lookup.py --question-first # the question before the picture: image tokens see what is asked

Each example: 9 "image tokens" (a one-hot of the cell and of its colour, projected by a trainable linear map,
like step 6's patches), then `filler` random word tokens, then ONE word naming a cell, then `tail` fixed
tokens (like "?<|im_end|>\\n<|im_start|>assistant\\n"), and the model must answer the colour in that cell.
With tail = 0 the word that names the cell is the answering position itself: one attention hop finds
the cell. With a tail, the answering position must first fetch the cell word, then look up the cell: two
hops that only help once both exist, so the loss sits on a plateau (guessing from the picture as a whole)
before it drops. The printed table shows how long that plateau lasts.

With --question-first the text (filler + cell word) comes BEFORE the image tokens, and only the tail after
them. Each image token can then look back at the cell word and mark itself "asked" (its own slot is all the
query it needs), and the answering position only has to find the marked token: both hops have a fixed query.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import time

import torch
import torch.nn.functional as F

from common.cli import course_parser, run
from common.device import seed_everything
from common.errors import CourseError
from common.training import print_summary
from step2_gpt.model import GPT, GPTConfig

CELLS, COLORS = 9, 8
FEATURE_DIM = CELLS + COLORS + 1            # cell one-hot | colour one-hot | occupied
CELL_WORD, FILLER_FROM, TAIL_FROM = 0, 20, 40  # token ids: cell words 0–8, fillers 20–39, tail 40–…, answers 10–17


def make_batch(g: torch.Generator, batch: int, filler: int, tail: int) -> tuple:
    """(features (B, 9, F), text ids (B, filler + 1 + tail), answer ids (B,)). About 40% of cells hold a shape."""
    color = torch.randint(0, COLORS, (batch, CELLS), generator=g)             # (B, 9)
    occupied = torch.rand(batch, CELLS, generator=g) < 0.4                     # (B, 9)
    occupied[:, 0] |= ~occupied.any(1)                                         # never an empty picture
    feats = torch.zeros(batch, CELLS, FEATURE_DIM)
    feats[:, :, :CELLS] = torch.eye(CELLS)                                     # where: which cell this token is
    feats.scatter_(2, (CELLS + color)[..., None], occupied[..., None].float())  # what: its colour, if occupied
    feats[:, :, -1] = occupied.float()
    asked = torch.multinomial(occupied.float(), 1, generator=g)[:, 0]          # (B,) an occupied cell
    text = torch.cat([torch.randint(FILLER_FROM, TAIL_FROM, (batch, filler), generator=g),
                      CELL_WORD + asked[:, None],
                      torch.arange(TAIL_FROM, TAIL_FROM + tail).expand(batch, tail)], 1)
    answer = 10 + color[torch.arange(batch), asked]
    return feats, text, answer


def arrange(words, image, filler: int, question_first: bool):
    """The input sequence (B, 9 + L, C): picture then text, or with question_first the filler and cell word,
    then the picture, then the tail."""
    if question_first:
        return torch.cat([words[:, :filler + 1], image, words[:, filler + 1:]], 1)
    return torch.cat([image, words], 1)


def train_lookup(qk_norm: bool, steps: int, lr: float, filler: int, tail: int, seed: int, batch: int = 32,
                 eval_every: int = 100, target: float = 0.95, question_first: bool = False, log=print) -> dict:
    """Train a fresh model until held-out accuracy ≥ target or `steps`; returns the curve and the step it got there."""
    seed_everything(seed)
    vocab = TAIL_FROM + max(tail, 1)
    gpt = GPT(GPTConfig(vocab_size=vocab, block_size=CELLS + filler + 1 + tail, n_layer=4, n_head=4, n_kv_head=4,
                        n_embd=256, ffn_hidden=704, qk_norm=qk_norm))
    proj = torch.nn.Linear(FEATURE_DIM, 256, bias=False)
    opt = torch.optim.AdamW([*gpt.parameters(), *proj.parameters()], lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    g, g_eval = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    test = make_batch(g_eval, 1024, filler, tail)

    def forward(feats, text):
        x = arrange(gpt.embed(text), proj(feats), filler, question_first)    # (B, 9 + L, C)
        return gpt(inputs_embeds=x)[0][:, -1]                                 # (B, V): the answering position

    curve, reached, t0 = [], None, time.perf_counter()
    for step in range(1, steps + 1):
        feats, text, answer = make_batch(g, batch, filler, tail)
        loss = F.cross_entropy(forward(feats, text), answer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                acc = (forward(*test[:2]).argmax(-1) == test[2]).float().mean().item()
            curve.append((step, round(loss.item(), 3), round(acc, 3)))
            log(f"  qk_norm={qk_norm!s:<5} step {step:>5}  loss {loss.item():.3f}  held-out accuracy {acc:.1%}")
            if acc >= target:
                reached = step
                break
    return {"qk_norm": qk_norm, "steps_to_target": reached, "final_accuracy": curve[-1][2], "curve": curve,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main():
    p = course_parser("The two-hop lookup plateau, without and with QK-norm (绑定问题：QK 归一化的作用)", "lr", "seed", "quick", lr=1e-3)
    p.add_argument("--qk-norm", choices=("both", "only", "off"), default="both", help="比较 both / only with / only without")
    p.add_argument("--steps", type=int, default=1500, help="最多步数 stop here if the target was not reached")
    p.add_argument("--filler", type=int, default=10, help="填充词数 random words between the picture and the question")
    p.add_argument("--tail", type=int, default=6, help="尾部固定词数 fixed tokens between the cell word and the answer")
    p.add_argument("--target", type=float, default=0.95, help="目标准确率 held-out accuracy that ends a run")
    p.add_argument("--question-first", action="store_true", help="问题在图像之前 the text before the image tokens")
    args = p.parse_args()
    if args.tail < 0 or args.filler < 0:
        raise CourseError("--tail and --filler count tokens: use 0 or more")
    steps = 16 if args.quick else args.steps
    settings = {"both": [False, True], "only": [True], "off": [False]}[args.qk_norm]
    rows = [train_lookup(q, steps, args.lr, args.filler, args.tail, args.seed, eval_every=8 if args.quick else 100,
                         target=args.target, question_first=args.question_first) for q in settings]
    print(f"\n{'qk_norm':<9}{'steps to ' + format(args.target, '.0%'):>14}{'final acc':>11}{'wall s':>9}")
    for r in rows:
        print(f"{str(r['qk_norm']):<9}{str(r['steps_to_target'] or f'>{steps}'):>14}{r['final_accuracy']:>11.1%}{r['wall_s']:>9}")
    print_summary(**{f"steps_to_target_qk_{r['qk_norm']}".lower(): r["steps_to_target"] for r in rows},
                  **{f"final_accuracy_qk_{r['qk_norm']}".lower(): r["final_accuracy"] for r in rows},
                  tail=args.tail, filler=args.filler, lr=args.lr, max_steps=steps, question_first=args.question_first)


if __name__ == "__main__":
    run(main)
