"""Preference learning on the SFT model: a reward model, then DPO, PPO or GRPO.

    python train.py                       # the default chain rm → dpo → grpo: runs/sft → runs/reward, runs/dpo, runs/rlhf
    python train.py --method rm           # the reward model (Bradley–Terry on preference pairs) → runs/reward
    python train.py --method dpo          # DPO against the frozen SFT model → runs/dpo
    python train.py --method ppo          # PPO: rollouts, the checker's reward, KL penalty, value head, GAE → runs/ppo
    python train.py --method grpo         # GRPO: k answers per prompt, the checker's reward → runs/grpo
    python train.py --method grpo --reward rm --beta 0    # chase the reward model with no KL: reward hacking
    python train.py --method dpo --data pairs.jsonl       # your pairs ({"prompt", "chosen", "rejected"})
    python train.py --quick               # seconds-long smoke run of the chain

Every method starts from --init (runs/sft), so eval.py compares them on one base; the chain starts GRPO from
the DPO model. Last line, one JSON object with the keys: method, steps (per method), rm_pair_accuracy,
rm_pair_accuracy_by_kind, dpo_implicit_accuracy, dpo_rm_win_rate, sft_verifiable_accuracy,
grpo_verifiable_accuracy (the RL method's, PPO's too), grpo_gain, kl_to_sft, answer_tokens, wall_s, device, out
(figures a method did not make are null).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import copy
import math
import os
import time
from pathlib import Path

import torch

from common import RUNS_DIR
from common.checkpoint import save_checkpoint
from common.cli import course_parser
from common.device import autocast
from common.errors import CourseError
from common.training import RunLogger, lr_at, make_optimizer, print_summary, process_start, start_run
from step2_gpt.model import quick_or_load_gpt
from step3_pretrain.data import tokenizer_fingerprint
from step5_rlhf.data import check_answer, encode_answer, read_pairs, story_prompts, world_pairs
from step5_rlhf.model import (RewardModel, ValueHead, load_reward_model, bradley_terry_loss, clipped_policy_loss, dpo_loss, gae,
                              group_advantages, kl_per_token, masked_mean, token_logprobs)
from step5_rlhf.rollout import rollout_batch, sample_answers
from step5_rlhf.scoring import (implicit_accuracy, kl_to, pair_accuracy, pair_batches, scores_of,
                                verifiable_accuracy, win_rate)

PROCESS_START = process_start()
# Per method: steps, batch (pairs, or prompts per RL step), learning rate, β.
DEFAULTS = {"rm": dict(steps=150, batch=8, lr=1e-4, beta=None), "dpo": dict(steps=100, batch=8, lr=5e-5, beta=0.1),
            "grpo": dict(steps=40, batch=8, lr=5e-5, beta=0.04), "ppo": dict(steps=40, batch=8, lr=5e-5, beta=0.04)}
KEYS = ("rm_pair_accuracy", "rm_pair_accuracy_by_kind", "dpo_implicit_accuracy", "dpo_rm_win_rate",
        "sft_verifiable_accuracy", "grpo_verifiable_accuracy", "grpo_gain", "kl_to_sft", "answer_tokens")
OUT = {"rm": "reward", "dpo": "dpo", "grpo": "grpo", "ppo": "ppo", "chain": "rlhf"}


def make_parser():
    p = course_parser("Step 5: a reward model, then DPO, PPO or GRPO on the SFT model.", "device", "dtype",
                      "max_steps", "batch_size", "lr", "seed", "data", "out", "init", "quick",
                      init=str(RUNS_DIR / "sft"), out=None, batch_size=None)
    p.add_argument("--method", choices=("chain", "rm", "dpo", "ppo", "grpo"), default="chain",
                   help="方法 chain = rm → dpo → grpo, writing runs/rlhf")
    p.add_argument("--beta", type=float, default=None, help="β: DPO's temperature (0.1); the KL weight of PPO/GRPO (0.04)")
    p.add_argument("--reward", choices=("checker", "rm", "both"), default=None,
                   help="RL 奖励 the checker's 0/1 (default), the reward model's score, or their sum")
    p.add_argument("--reward-model", default=str(RUNS_DIR / "reward"), help="奖励模型 the reward model folder (from --method rm)")
    p.add_argument("--prefer", choices=("right", "longer"), default="right",
                   help="rm 偏好 right: the pairs as made; longer: the longer answer wins (a proxy that can be gamed)")
    p.add_argument("--group", type=int, default=8, help="GRPO/PPO: answers sampled per prompt")
    p.add_argument("--updates", type=int, default=1, help="GRPO/PPO: optimizer steps per batch of samples (the clip acts from the 2nd)")
    p.add_argument("--eval-n", type=int, default=200, help="留出评估数 held-out pairs and prompts scored at the end")
    return p


def save_model(run, out, model, step_name, metrics, args, t0, extra=None):
    """A method's checkpoint (a plain step-2 GPT, or the reward model), with its training time since t0."""
    metrics = {**metrics, "train_s": round(time.perf_counter() - t0, 1)}
    save_checkpoint(out, state_dict=model.state_dict(), step=step_name, model_config=run.cfg, train_args=vars(args),
                    metrics=metrics, tokenizer=run.tok,
                    extra={"tokenizer_fingerprint": run.fingerprint, **(extra or {})})


class Run:
    """What every method needs: the device, the SFT model (the start and the frozen reference) and its tokenizer."""

    def __init__(self, args):
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise CourseError("step 5 trains in one process (its rollouts are sequential); run it without torchrun")
        _, _, self.device, self.dtype, _, self.say = start_run(args.device, args.dtype, args.seed)
        self.sft, self.tok, where = quick_or_load_gpt(args.init, args.quick, hint="python step4_sft/train.py")
        self.say(f"start: {where}")
        self.sft.to(self.device).eval().requires_grad_(False)
        self.cfg, self.fingerprint = self.sft.config.to_dict(), tokenizer_fingerprint(self.tok)
        self.pairs = read_pairs(args.data) if args.data else None
        for p in self.pairs or []:  # every pair must fit the context, checked before anything is written
            for answer in (p["chosen"], p["rejected"]):
                encode_answer(self.tok, p["prompt"], answer, self.sft.config.block_size, p["where"])

        # the world's held-out pairs, scored after the reward model and DPO (real data has none)
        self.heldout_pairs = [] if self.pairs else world_pairs(args.eval_n, args.seed, "heldout")

    def pair_batches(self, d, seed, prefer="right"):
        """d["steps"] batches of d["batch"] training pairs (real pairs repeat as often as needed)."""
        n = d["steps"] * d["batch"]
        pairs = self.pairs if self.pairs else world_pairs(n, seed)
        if prefer == "longer":  # the gameable proxy: whichever answer is longer is "chosen"
            pairs = [dict(p, chosen=max(p["chosen"], p["rejected"], key=len),
                          rejected=min(p["chosen"], p["rejected"], key=len)) for p in pairs]
        return pair_batches(self.tok, pairs * math.ceil(n / len(pairs)), self.sft.config.block_size, self.device,
                            d["batch"])


def train_rm(run, args, out):
    """Bradley–Terry: score chosen above rejected, for a batch of pairs at a time."""
    d, t0 = settings(args, "rm"), time.perf_counter()
    rm = RewardModel(copy.deepcopy(run.sft).requires_grad_(True)).to(run.device).train()
    opt = make_optimizer(rm, d["lr"], 0.0, run.device)
    batches = run.pair_batches(d, args.seed, args.prefer)
    log = RunLogger(out, d["steps"], desc="rm")
    for step in range(d["steps"]):
        part, x, y = next(batches)
        with autocast(run.device, run.dtype):
            r = rm(x, y)                                                       # (2b,)
        loss = bradley_terry_loss(r[:len(part)].float(), r[len(part):].float())
        step_with(opt, loss, schedule(step, d))
        log.train_step(step, loss.item(), opt.param_groups[0]["lr"], accuracy=(r[:len(part)] > r[len(part):]).float().mean().item())
    log.close()
    acc, by_kind = pair_accuracy(rm, run.tok, run.heldout_pairs, run.device) if run.heldout_pairs else (None, None)
    run.say(f"reward model: held-out pair accuracy {acc} {by_kind}")
    rm.eval()
    save_model(run, out, rm, "reward", {"pair_accuracy": acc, "by_kind": by_kind}, args, t0)
    return rm, {"rm_pair_accuracy": acc, "rm_pair_accuracy_by_kind": by_kind}


def schedule(step, d):
    return lr_at(step, max_lr=d["lr"], total_steps=d["steps"], warmup_steps=max(1, d["steps"] // 10))


def step_with(opt, loss, lr):
    """backward → clip → AdamW step at `lr`."""
    for g in opt.param_groups:
        g["lr"] = lr
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def settings(args, method):
    d = dict(DEFAULTS[method])
    d["steps"] = args.max_steps or ((3 if method in ("grpo", "ppo") else 6) if args.quick else d["steps"])
    d["batch"] = args.batch_size or (4 if args.quick else d["batch"])
    d["lr"] = args.lr or d["lr"]
    d["beta"] = d["beta"] if args.beta is None else args.beta
    return d


def train_dpo(run, args, out, start):
    """DPO: raise log π/ref of the chosen answer above the rejected one's, against the frozen SFT model."""
    d, t0 = settings(args, "dpo"), time.perf_counter()
    policy = copy.deepcopy(start).requires_grad_(True).train()
    opt = make_optimizer(policy, d["lr"], 0.0, run.device)
    batches = run.pair_batches(d, args.seed)
    log = RunLogger(out, d["steps"], desc="dpo")
    for step in range(d["steps"]):
        part, x, y = next(batches)
        n = len(part)
        with autocast(run.device, run.dtype):
            logp = token_logprobs(policy, x, y).sum(1)                        # (2b,)
            with torch.no_grad():
                ref = token_logprobs(run.sft, x, y).sum(1)                    # (2b,)
        loss, rc, rr = dpo_loss(logp[:n], logp[n:], ref[:n], ref[n:], d["beta"])
        step_with(opt, loss, schedule(step, d))
        log.train_step(step, loss.item(), opt.param_groups[0]["lr"], logp_chosen=logp[:n].mean().item(),
                       logp_rejected=logp[n:].mean().item(), margin=(rc - rr).mean().item(),
                       implicit_accuracy=(rc > rr).float().mean().item())
    log.close()
    policy.eval()
    metrics = {}
    if run.heldout_pairs:
        metrics["dpo_implicit_accuracy"], by_kind = implicit_accuracy(policy, run.sft, run.tok, run.heldout_pairs,
                                                                      run.device)
        run.say(f"DPO: held-out implicit-reward accuracy {metrics['dpo_implicit_accuracy']} {by_kind}")
    save_model(run, out, policy, "rlhf", metrics, args, t0, {"method": "dpo"})
    return policy, metrics


def train_rl(run, args, out, start, method):
    """PPO or GRPO on the verifiable stories: sample `group` answers per prompt, reward them, and push up the
    log-probability of the better ones, with a KL term that keeps the policy near the SFT model."""
    d, t0 = settings(args, method), time.perf_counter()
    reward_kind = args.reward or "checker"
    rm = load_reward_model(args.reward_model, run.tok, run.device) if reward_kind != "checker" else None
    policy = copy.deepcopy(start).requires_grad_(True).train()
    value = ValueHead(policy.config.n_embd).to(run.device) if method == "ppo" else None
    opt = make_optimizer(policy, d["lr"], 0.0, run.device)
    value_opt = torch.optim.AdamW(value.parameters(), lr=1e-3) if value else None
    prompts = story_prompts(d["steps"] * d["batch"], args.seed)
    log = RunLogger(out, d["steps"], desc=method)
    for step in range(d["steps"]):
        batch = prompts[step * d["batch"]:(step + 1) * d["batch"]]
        samples = sample_answers(policy, run.tok, [p["prompt"] for p in batch], args.group, run.device)
        truths = [p["truth"] for p in batch for _ in range(args.group)]
        correct = torch.tensor([float(check_answer(s[2], s[3], t)) for s, t in zip(samples, truths)])  # (N,)
        reward = correct.clone() if reward_kind != "rm" else torch.zeros_like(correct)
        if rm is not None:
            reward += torch.tensor(scores_of(rm, run.tok, samples, run.device))
        x, y = rollout_batch(samples, run.tok.pad_id, run.device)             # (N, T) each
        with torch.no_grad():
            ref = token_logprobs(run.sft, x, y)                                # (N, T)
        for update in range(args.updates):  # several passes over one batch of samples: the ratio leaves 1
            with autocast(run.device, run.dtype):
                logp = token_logprobs(policy, x, y)                            # (N, T)
            if update == 0:  # the policy that sampled: the ratio's denominator for every pass
                old = logp.detach()
                if method == "grpo":
                    adv = group_advantages(reward, args.group).to(run.device)[:, None]  # (N, 1): all tokens alike
                else:
                    adv, returns = ppo_advantages(value, policy, x, y, reward.to(run.device), old, ref, d["beta"])
            kl = masked_mean(kl_per_token(logp, ref, y), y)
            loss = clipped_policy_loss(logp, old, adv, y) + (d["beta"] * kl if method == "grpo" else 0)
            step_with(opt, loss, schedule(step, d))
        if value is not None:  # the critic learns the returns it will be asked to predict next time
            value_loss = masked_mean((value(policy, x) - returns) ** 2, y)
            step_with(value_opt, value_loss, 1e-3)
        groups = correct.view(-1, args.group)
        log.train_step(step, loss.item(), opt.param_groups[0]["lr"], reward=reward.mean().item(),
                       correct=correct.mean().item(), kl=kl.item(), answer_tokens=(y != -100).sum(1).float().mean().item(),
                       equal_groups=(groups.max(1).values == groups.min(1).values).float().mean().item())
    log.close()
    policy.eval()
    save_model(run, out, policy, "rlhf", {}, args, t0, {"method": method, "reward": reward_kind})
    return policy


def ppo_advantages(value, policy, x, y, reward, old, ref, beta):
    """PPO's per-token rewards: −β·(log π − log ref) at every answer token, the sequence's reward added at its
    last one; GAE over each answer with the critic's values → (whitened advantages (N, T), returns (N, T))."""
    with torch.no_grad():
        values = value(policy, x)                                              # (N, T)
    adv, returns = torch.zeros_like(values), torch.zeros_like(values)
    for i in range(len(x)):
        pos = (y[i] != -100).nonzero().squeeze(-1)                             # (n_i,) answer positions
        r = -beta * (old[i, pos] - ref[i, pos])                                # (n_i,)
        r[-1] += reward[i]
        a, ret = gae(r.cpu(), values[i, pos].cpu())
        adv[i, pos], returns[i, pos] = a.to(adv.device), ret.to(adv.device)
    m = y != -100
    adv = torch.where(m, (adv - adv[m].mean()) / (adv[m].std() + 1e-6), 0.0)
    return adv, returns


def main():
    args = make_parser().parse_args()
    if args.quick:  # seconds, not minutes: few samples, few held-out prompts
        args.group, args.eval_n = min(args.group, 4), min(args.eval_n, 20)
    run = Run(args)
    out = Path(args.out or RUNS_DIR / OUT[args.method])
    eval_prompts = story_prompts(args.eval_n, args.seed, "heldout")
    summary = dict(method=args.method, **dict.fromkeys(KEYS))
    if args.method == "rm":
        _, figures = train_rm(run, args, out)
        summary.update(figures)
    if args.method == "chain":
        rm, figures = train_rm(run, args, out.parent / OUT["rm"])
        summary.update(figures)
    if args.method in ("chain", "dpo"):
        dpo, figures = train_dpo(run, args, out.parent / OUT["dpo"] if args.method == "chain" else out, run.sft)
        summary.update(figures)
        if run.heldout_pairs and (args.method == "chain" or Path(args.reward_model, "config.json").is_file()):
            rm = rm if args.method == "chain" else load_reward_model(args.reward_model, run.tok, run.device)
            summary["dpo_rm_win_rate"] = win_rate(rm, run.tok, dpo, run.sft, run.heldout_pairs, run.device)
        final = dpo
    if args.method in ("chain", "grpo", "ppo"):
        method = "grpo" if args.method == "chain" else args.method
        final = train_rl(run, args, out, dpo if args.method == "chain" else run.sft, method)
        sft_acc, _ = verifiable_accuracy(run.sft, run.tok, eval_prompts, run.device)
        acc, length = verifiable_accuracy(final, run.tok, eval_prompts, run.device)
        summary.update(sft_verifiable_accuracy=sft_acc, grpo_verifiable_accuracy=acc, grpo_gain=round(acc - sft_acc, 4),
                       answer_tokens=length)
    if args.method != "rm":
        summary["kl_to_sft"] = kl_to(final, run.sft, run.tok, eval_prompts[:50], run.device)
    print_summary(**summary, wall_s=round(time.perf_counter() - PROCESS_START, 2), device=str(run.device), out=str(out))


if __name__ == "__main__":
    from common.cli import run
    run(main)
