"""The pieces of preference learning, each a few lines: a reward model and its Bradley–Terry loss, answer
log-probabilities, the DPO loss, the KL to the reference model, GAE for PPO, group advantages for GRPO and the
clipped policy loss both RL methods share.

    python model.py --demo     # the reward model scores a chosen and a rejected answer; shapes and losses

Every sequence is laid out as in step 4: x (B, T) the input ids, y (B, T) the next token where it is part of the
answer (its content and <|im_end|>), else -100. "The answer's log-probability" is summed over those positions.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import load_checkpoint
from common.errors import CourseError
from step2_gpt.model import GPT, GPTConfig
from step3_pretrain.data import tokenizer_fingerprint


class RewardModel(nn.Module):
    """The SFT GPT's body with a scalar head instead of the vocabulary: one score per sequence, read at the
    answer's last token (the position that predicts <|im_end|>, which has seen the whole prompt and answer)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.head.weight)  # every answer starts at score 0: training alone sets the scale
        nn.init.zeros_(self.head.bias)

    def forward(self, x, y):
        h = self.gpt.hidden_states(self.gpt.embed(x))                # (B, T, C)
        last = last_answer_position(y)                               # (B,)
        return self.head(h[torch.arange(len(x)), last]).squeeze(-1)  # (B,)


def load_reward_model(path, tok, device="cpu"):
    """runs/reward → the reward model in eval mode; refused in one sentence if it was trained with another
    tokenizer than `tok` (the policy's): its scores would be of other token ids."""
    ckpt = load_checkpoint(path, expect_steps=("reward",), hint="python step5_rlhf/train.py --method rm")
    if ckpt.extra.get("tokenizer_fingerprint") != tokenizer_fingerprint(tok):
        raise CourseError(f"{ckpt.path} was trained with another tokenizer than the policy's; retrain it with: "
                          "python step5_rlhf/train.py --method rm")
    rm = RewardModel(GPT(GPTConfig.from_dict(ckpt.model_config)))
    rm.load_state_dict(ckpt.state_dict)
    return rm.to(device).eval()


def last_answer_position(y):
    """Index of the last supervised position per row, (B, T) → (B,): the input there is the answer's last
    content token and its target the <|im_end|>, so the hidden state there has read the whole answer."""
    T = y.size(1)
    pos = torch.arange(T, device=y.device).expand_as(y)               # (B, T)
    return torch.where(y != -100, pos, -1).max(dim=1).values          # (B,)


def bradley_terry_loss(r_chosen, r_rejected):
    """−log σ(r_c − r_r): the chosen answer should score higher; the model of a preference as a coin whose
    bias is the score difference."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def token_logprobs(model, x, y):
    """log p(y_t | x_≤t) at every answer position, 0 elsewhere: (B, T) → (B, T), in fp32."""
    logits, _ = model(x)                                                          # (B, T, V)
    logp = torch.log_softmax(logits.float(), dim=-1)                              # (B, T, V)
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)           # (B, T)
    return picked * (y != -100)                                                   # (B, T)


def answer_logprob(model, x, y):
    """log p(answer | prompt), the sum over the answer's tokens: (B, T) → (B,)."""
    return token_logprobs(model, x, y).sum(dim=1)


def dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta):
    """DPO: −log σ(β·[(log π_c − log ref_c) − (log π_r − log ref_r)]). The implicit rewards β·log(π/ref) of
    the two answers are returned too: their difference is the margin, its sign the implicit-reward accuracy.
    At the start π = ref, every term is 0 and the loss is log 2."""
    reward_c = beta * (pi_chosen - ref_chosen)                       # (B,)
    reward_r = beta * (pi_rejected - ref_rejected)                   # (B,)
    return -F.logsigmoid(reward_c - reward_r).mean(), reward_c.detach(), reward_r.detach()


def kl_per_token(logp, ref_logp, y):
    """An estimate of KL(π ‖ ref) at every sampled answer token, (B, T) → (B, T): with d = log ref − log π,
    e^d − d − 1 ≥ 0, zero only where the two agree, and unbiased for tokens sampled from π."""
    d = (ref_logp - logp) * (y != -100)                             # (B, T)
    return d.exp() - d - 1                                          # (B, T)


def masked_mean(v, y):
    """Mean of v (B, T) over the answer positions of y."""
    m = (y != -100).float()
    return (v * m).sum() / m.sum().clamp(min=1)


def clipped_policy_loss(logp, old_logp, advantages, y, clip=0.2):
    """PPO's surrogate: maximise ratio·A, but with the ratio π/π_old clipped to 1 ± clip, so one batch of samples
    cannot move the policy far. logp, old_logp (B, T); advantages (B, T) or (B, 1)."""
    ratio = (logp - old_logp).exp()                                               # (B, T)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)  # (B, T)
    return -masked_mean(surrogate, y)


def group_advantages(rewards, group_size, eps=1e-6):
    """GRPO: the advantage of a sample is its reward standardised within the group of samples for the same
    prompt, (n·k,) → (n·k,). A group whose rewards are all equal gets 0: it says nothing about which answer
    is better."""
    r = rewards.view(-1, group_size)                                              # (n, k)
    adv = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + eps)  # (n, k)
    return adv.flatten()                                                          # (n·k,)


def gae(rewards, values, gamma=1.0, lam=0.95):
    """Generalised advantage estimation over one trajectory: rewards (T,), values (T,) → (advantages, returns).
    δ_t = r_t + γ·V_{t+1} − V_t (V after the last step is 0); A_t = δ_t + γλ·A_{t+1}; returns = A + V."""
    T = len(rewards)
    adv = torch.zeros(T)
    running = 0.0
    for t in reversed(range(T)):
        next_value = values[t + 1] if t + 1 < T else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, adv + values


class ValueHead(nn.Module):
    """PPO's critic: the expected reward still to come, from the policy's hidden state at every position. It
    reads the hidden states detached, so fitting the values never pulls on the policy's own weights."""

    def __init__(self, n_embd):
        super().__init__()
        self.head = nn.Linear(n_embd, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, gpt, x):
        with torch.no_grad():
            h = gpt.hidden_states(gpt.embed(x))                    # (B, T, C)
        return self.head(h).squeeze(-1)                            # (B, T)


# ----------------------------------------------------------------------------------------------------
# python model.py --demo


def demo():
    from step2_gpt.model import GPT_STEPS, quick_or_load_gpt, newest_gpt_checkpoint
    from step4_sft.data import make_batch
    from step5_rlhf.data import encode_answer, world_pairs

    try:
        path = newest_gpt_checkpoint(("sft",) + GPT_STEPS)
    except CourseError:
        path = pathlib.Path("no-checkpoint")
    gpt, tok, where = quick_or_load_gpt(path, quick=True)
    torch.manual_seed(0)
    rm = RewardModel(gpt).eval()
    pair = world_pairs(1, 1337)[0]
    ex = [encode_answer(tok, pair["prompt"], a, gpt.config.block_size) for a in (pair["chosen"], pair["rejected"])]
    x, y = make_batch(ex, tok.pad_id)                                           # (2, T)
    print(f"policy / reward-model body: {where}")
    print(f"prompt:   {pair['prompt'][-1]['content']}\nchosen:   {pair['chosen']}\nrejected: {pair['rejected']}  ({pair['kind']})")
    print(f"x, y: {tuple(x.shape)}  (chosen and rejected, padded to one length; y = -100 outside the answer)")
    with torch.no_grad():
        scores = rm(x, y)                                                       # (2,)
        logp = answer_logprob(gpt, x, y)                                        # (2,)
        bt = bradley_terry_loss(scores[:1], scores[1:])
        d, _, _ = dpo_loss(logp[:1], logp[1:], logp[:1], logp[1:], beta=0.1)
    print(f"reward model scores (untrained head, so 0): chosen {scores[0]:.3f}, rejected {scores[1]:.3f}; "
          f"Bradley–Terry loss {bt:.4f} (= log 2 = 0.6931 at equal scores)")
    print(f"answer log-probs under the policy: chosen {logp[0]:.2f}, rejected {logp[1]:.2f}")
    print(f"DPO loss with the policy as its own reference: {d:.4f} (log 2)")
    print(f"trainable: reward model {sum(p.numel() for p in rm.parameters()):,} (body + a {gpt.config.n_embd}→1 head); "
          f"the value head adds {gpt.config.n_embd + 1} to the policy for PPO")
    print(f"GRPO advantages of rewards [1, 0, 0, 1 | 1, 1, 1, 1]: "
          f"{[round(a, 2) for a in group_advantages(torch.tensor([1., 0, 0, 1, 1, 1, 1, 1]), 4).tolist()]}")


def main():
    from common.cli import demo_parser, wants_demo
    if wants_demo(demo_parser("Step 5: reward model, DPO, KL, GAE and group advantages.")):
        demo()


if __name__ == "__main__":
    from common.cli import run
    run(main)
