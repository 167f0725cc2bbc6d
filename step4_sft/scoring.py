"""How step 4 is measured: greedy answers on held-out conversations scored by exact match, per task and
language; the "I don't know" rates; and the loss on step 3's validation text (what SFT costs the base model).
Used by train.py (its final line) and eval.py (the full table against the pretrained model)."""
from collections import defaultdict

import torch

from step3_pretrain.model import eval_offsets, evaluate
from step4_sft.data import IDK, world_conversations

MAX_ANSWER_TOKENS = 32  # every world answer is far shorter; a model that rambles is cut here and scores 0


@torch.no_grad()
def greedy_answer(model, tok, messages, device):
    """The model's greedy reply to `messages` → (text up to its first <|im_end|> or newline, ended_with_im_end)."""
    ids, _ = tok.render_conversation(messages, add_generation_prompt=True)
    ids = ids[-(model.config.block_size - MAX_ANSWER_TOKENS):]  # keep room for the answer
    new = model.generate(torch.tensor([ids], device=device), max_new_tokens=MAX_ANSWER_TOKENS, temperature=0,
                         eos_id=tok.im_end_id)[0].tolist()
    ended = tok.im_end_id in new
    new = new[:new.index(tok.im_end_id)] if ended else new
    # A model that never saw the template (the pretrained baseline) goes on past its answer: its first line is
    # the answer, the same cut for both models.
    return tok.decode(new, skip_special=True).split("\n")[0].strip(), ended


def score(model, tok, convs, device, shots_of=lambda conv: []):
    """Answer every assistant turn of every conversation (earlier turns given as the reference, after the
    few-shot prefix `shots_of(conv)`) → a dict of exact match {task: {lang: share}}, its mean, eos_rate,
    idk_rate_unanswerable, idk_rate_answerable and a few (question, wanted, got) examples per task."""
    was_training = model.training
    model.eval()
    hits, eos, examples = defaultdict(list), [], defaultdict(list)
    idk = {True: [], False: []}  # is the right answer "I don't know"? → did the model say it?
    for conv in convs:
        msgs = conv["messages"]
        for k, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            got, ended = greedy_answer(model, tok, shots_of(conv) + msgs[:k], device)
            hits[(conv["task"], conv["lang"])].append(got == m["content"])
            eos.append(ended)
            if conv["lang"] in IDK:
                idk[m["content"] == IDK[conv["lang"]]].append(got == IDK[conv["lang"]])
            if len(examples[conv["task"]]) < 2:
                examples[conv["task"]].append((msgs[k - 1]["content"], m["content"], got))
    model.train(was_training)
    share = lambda v: round(sum(v) / len(v), 4) if v else None
    table = defaultdict(dict)
    for (task, lang), h in sorted(hits.items()):
        table[task][lang] = share(h)
    every = [h for v in hits.values() for h in v]
    return {"exact_match": dict(table), "mean": share(every), "eos_rate": share(eos),
            "idk_rate_unanswerable": share(idk[True]), "idk_rate_answerable": share(idk[False]),
            "examples": dict(examples)}


def few_shot(seed, shots=2):
    """A fair prompt for a model that never saw a question: `shots` solved training conversations of the
    same task and language before the held-out one (system prompts left out)."""
    pool = world_conversations(100, seed)

    def shots_of(conv):
        same = [c for c in pool if c["task"] == conv["task"] and c["lang"] == conv["lang"]][:shots]
        return [m for c in same for m in c["messages"] if m["role"] != "system"]
    return shots_of


def pretrain_val_loss(model, text, device):
    """Loss on the validation text of a pretraining run, `text` = pretrain_text(its checkpoint): that run's data
    and windows, exactly as step 3's train.py measured it. The same number before SFT, so the change after SFT is
    what SFT cost the base model."""
    data, seq_len, windows = text
    return evaluate(model, data.val, eval_offsets(len(data.val), seq_len, windows), seq_len, 16, device,
                    torch.float32, 0, 1)
