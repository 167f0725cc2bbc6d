"""One turn of conversation about a picture: the prompt with its <image> placeholder where the model expects it,
then a greedy (or sampled) answer, streamed through `on_token` (demo.py, the notebook, server.py)."""
import torch

from common.errors import CourseError
from step6_vlm.data import user_turn
from step6_vlm.model import build_example, image_token_id
from step6_vlm.vision import preprocess


def prepare_prompt(prompt: str, n_images: int = 1, layout: str = "question-first") -> str:
    """The prompt with exactly one <image> per image. A prompt without the placeholder (the usual case: the
    user just asks) gets it where the model was trained to see it, its layout; more placeholders than images
    are refused."""
    n = prompt.count("<image>")
    if n == 0 and n_images == 1:
        return user_turn(prompt, layout)
    if n != n_images:
        raise CourseError(f"the prompt has {n} <image> placeholders but {n_images} image(s) were given; "
                          f"use exactly one <image> per image")
    return prompt


def prompt_ids(vlm, tok, messages) -> list:
    """Chat messages (one <image> per picture in the user turns) → the prompt's ids, images expanded, with the
    assistant's turn opened. Refused when it leaves no room for even one answer token."""
    image_token_id(tok)
    ids, _ = build_example(vlm, tok, messages, add_generation_prompt=True)
    if len(ids) >= vlm.llm.config.block_size:
        raise CourseError(f"the conversation fills all {vlm.llm.config.block_size} positions of the model's context; "
                          f"no room is left for an answer: shorten it")
    return ids


def generate_reply(vlm, tok, ids, pixel_values=None, max_new_tokens=128, temperature=0.0, top_p=None,
                   on_token=None) -> list:
    """The answer's new ids (ending in <|im_end|> when the model stopped), at most what the context has room for."""
    room = vlm.llm.config.block_size - len(ids)
    device = next(vlm.llm.parameters()).device
    new = vlm.generate(torch.tensor([ids], device=device), pixel_values=pixel_values,
                       max_new_tokens=min(max_new_tokens, room), temperature=temperature, top_p=top_p,
                       eos_id=tok.im_end_id, on_token=on_token)
    return new[0].tolist()


def answer(vlm, tok, processor, image, prompt: str, max_new_tokens=128, temperature=0.0, on_token=None, device="cpu") -> str:
    """One question about one PIL image → the model's answer text."""
    ids = prompt_ids(vlm, tok, [{"role": "user", "content": prepare_prompt(prompt, 1, vlm.config.layout)}])
    pv = preprocess(processor, [image]).to(device)                             # (1, 3, H, W)
    new = generate_reply(vlm, tok, ids, pv, max_new_tokens, temperature, on_token=on_token)
    return tok.decode([t for t in new if t != tok.im_end_id], skip_special=True)
