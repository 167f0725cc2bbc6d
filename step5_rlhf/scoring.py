"""How step 5 is measured, on held-out prompts: the reward model's pair accuracy (overall and per kind of bad
answer), DPO's implicit-reward accuracy, the verifiable accuracy of greedy answers (the programmatic checker),
the reward model's win rate of one policy against another, the KL to the SFT model and the answer length.
Used by train.py (its last line) and eval.py (the table of every method)."""
from collections import defaultdict

import torch

from step4_sft.data import make_batch
from step5_rlhf.data import check_answer, encode_answer
from step5_rlhf.model import answer_logprob, kl_per_token, token_logprobs
from step5_rlhf.rollout import rollout_batch, sample_answers

BATCH = 32


def pair_batches(tok, pairs, block_size, device, size=BATCH // 2):
    """Preference pairs → batches (x, y) whose first half is the chosen answers and second half the rejected."""
    for i in range(0, len(pairs), size):
        part = pairs[i:i + size]
        ex = [encode_answer(tok, p["prompt"], p["chosen"], block_size) for p in part] + \
             [encode_answer(tok, p["prompt"], p["rejected"], block_size) for p in part]
        x, y = make_batch(ex, tok.pad_id)                               # (2b, T) each
        yield part, x.to(device), y.to(device)


def _by_kind(pairs, right):
    """Shares of `right` (one bool per pair) overall and per kind."""
    kinds = defaultdict(list)
    for p, r in zip(pairs, right):
        kinds[p["kind"]].append(r)
    share = lambda v: round(sum(v) / len(v), 4)
    return share(right), {k: share(v) for k, v in sorted(kinds.items())}


@torch.no_grad()
def pair_accuracy(reward_model, tok, pairs, device):
    """Share of pairs whose chosen answer the reward model scores higher → (overall, {kind: share})."""
    reward_model.eval()
    right = []
    for part, x, y in pair_batches(tok, pairs, reward_model.gpt.config.block_size, device):
        r = reward_model(x, y)                                          # (2b,)
        right += (r[:len(part)] > r[len(part):]).tolist()
    return _by_kind(pairs, right)


@torch.no_grad()
def implicit_accuracy(policy, reference, tok, pairs, device):
    """DPO's implicit reward log π/ref: the share of pairs where it ranks chosen above rejected."""
    right = []
    for part, x, y in pair_batches(tok, pairs, policy.config.block_size, device):
        margin = answer_logprob(policy, x, y) - answer_logprob(reference, x, y)  # (2b,)
        right += (margin[:len(part)] > margin[len(part):]).tolist()
    return _by_kind(pairs, right)


@torch.no_grad()
def greedy_answers(model, tok, prompts, device):
    """[(ids, mask, text, ended)]: one greedy answer per prompt."""
    return sample_answers(model, tok, [p["prompt"] for p in prompts], 1, device, temperature=0)


def verifiable_accuracy(model, tok, prompts, device):
    """Share of story prompts whose greedy answer the checker accepts, and the mean answer length in tokens."""
    answers = greedy_answers(model, tok, prompts, device)
    right = [check_answer(text, ended, p["truth"]) for p, (_, _, text, ended) in zip(prompts, answers)]
    return round(sum(right) / len(right), 4), round(sum(sum(m) for _, m, _, _ in answers) / len(answers), 2)


@torch.no_grad()
def scores_of(reward_model, tok, answers, device):
    """The reward model's score of each (ids, mask, ...) answer."""
    reward_model.eval()
    out = []
    for i in range(0, len(answers), BATCH):
        x, y = rollout_batch(answers[i:i + BATCH], tok.pad_id, device)
        out += reward_model(x, y).tolist()
    return out


def win_rate(reward_model, tok, model, baseline, prompts, device):
    """Share of prompts where the reward model scores `model`'s greedy answer above `baseline`'s (a tie, the same
    answer, counts half)."""
    ours, theirs = greedy_answers(model, tok, prompts, device), greedy_answers(baseline, tok, prompts, device)
    s_ours, s_theirs = scores_of(reward_model, tok, ours, device), scores_of(reward_model, tok, theirs, device)
    wins = [0.5 if a[0] == b[0] else float(x > y) for a, b, x, y in zip(ours, theirs, s_ours, s_theirs)]
    return round(sum(wins) / len(wins), 4)


@torch.no_grad()
def kl_to(model, reference, tok, prompts, device, k=4):
    """KL(model ‖ reference) per answer, estimated on k sampled answers per prompt (summed over their tokens)."""
    samples = sample_answers(model, tok, [p["prompt"] for p in prompts], k, device)
    total = 0.0
    for i in range(0, len(samples), BATCH):
        x, y = rollout_batch(samples[i:i + BATCH], tok.pad_id, device)
        total += kl_per_token(token_logprobs(model, x, y), token_logprobs(reference, x, y), y).sum().item()
    return round(total / len(samples), 4)
