"""Sampling answers from the policy (rollouts) and turning them into training batches; used by PPO and GRPO in
train.py and by the measurements in scoring.py."""
import torch

from step4_sft.data import make_batch

MAX_ANSWER_TOKENS = 24  # a world answer needs fewer than 10; a reply still going at 24 never ended


@torch.no_grad()
def sample_answers(model, tok, prompts, k, device, temperature=1.0, max_new=MAX_ANSWER_TOKENS):
    """k answers to each prompt (a list of messages) → [(ids, mask, text, ended)], prompt by prompt: ids = prompt
    + answer (up to and including its <|im_end|>), mask 1 on the answer tokens. Prompts of the same token length
    are sampled together in one batch with the KV cache (the model has no padding mask, so a batch is one length)."""
    encoded = [tok.render_conversation(p, add_generation_prompt=True)[0][-(model.config.block_size - max_new):]
               for p in prompts]  # keep room for the answer
    by_length = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    answers = {}
    for group in by_length.values():
        idx = torch.tensor([encoded[i] for i in group for _ in range(k)], device=device)  # (len(group)·k, T0)
        new = model.generate(idx, max_new_tokens=max_new, temperature=temperature, eos_id=tok.im_end_id).tolist()
        for j, row in enumerate(new):
            answers[group[j // k], j % k] = row
    out = []
    for i, prompt_ids in enumerate(encoded):
        for j in range(k):
            row = answers[i, j]
            ended = tok.im_end_id in row
            answer = row[:row.index(tok.im_end_id) + 1] if ended else row
            text = tok.decode([t for t in answer if t != tok.im_end_id], skip_special=True).strip()
            out.append((prompt_ids + answer, [0] * len(prompt_ids) + [1] * len(answer), text, ended))
    return out


def rollout_batch(samples, pad_id, device):
    """[(ids, mask, ...)] → (x, y) on `device` in step 4's layout (y = the answer's next tokens, −100 elsewhere)."""
    x, y = make_batch([(ids, mask) for ids, mask, *_ in samples], pad_id)  # (N, T) each
    return x.to(device), y.to(device)
