"""Sampling answers from the policy (rollouts) and turning them into training batches; used by PPO and GRPO in
train.py and by the measurements in scoring.py."""
import torch

from step4_sft.data import make_batch

MAX_ANSWER_TOKENS = 24  # a world answer needs fewer than 10; a reply still going at 24 never ended


@torch.no_grad()
def sample_answers(model, tok, prompt, k, device, temperature=1.0, max_new=MAX_ANSWER_TOKENS):
    """k answers to one prompt (messages), sampled together with the KV cache → [(ids, mask, text, ended)]:
    ids = prompt + answer (up to and including its <|im_end|>), mask 1 on the answer tokens."""
    prompt_ids, _ = tok.render_conversation(prompt, add_generation_prompt=True)
    if len(prompt_ids) + max_new > model.config.block_size:
        prompt_ids = prompt_ids[-(model.config.block_size - max_new):]  # keep room for the answer
    idx = torch.tensor([prompt_ids] * k, device=device)                  # (k, T0)
    new = model.generate(idx, max_new_tokens=max_new, temperature=temperature, eos_id=tok.im_end_id).tolist()
    out = []
    for row in new:
        ended = tok.im_end_id in row
        answer = row[:row.index(tok.im_end_id) + 1] if ended else row
        text = tok.decode([t for t in answer if t != tok.im_end_id], skip_special=True).strip()
        out.append((prompt_ids + answer, [0] * len(prompt_ids) + [1] * len(answer), text, ended))
    return out


def rollout_batch(samples, pad_id, device):
    """[(ids, mask, ...)] → (x, y) on `device` in step 4's layout (y = the answer's next tokens, −100 elsewhere)."""
    x, y = make_batch([(ids, mask) for ids, mask, *_ in samples], pad_id)  # (N, T) each
    return x.to(device), y.to(device)
