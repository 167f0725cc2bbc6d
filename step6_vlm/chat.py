"""One turn of conversation about a picture: the prompt with its <image> placeholder where the model expects it,
then a greedy (or sampled) answer, streamed through `on_token` (demo.py, the notebook, a server)."""
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


def answer(vlm, tok, processor, image, prompt: str, max_new_tokens=128, temperature=0.0, on_token=None, device="cpu") -> str:
    """One question about one PIL image → the model's answer text."""
    prompt = prepare_prompt(prompt, 1, vlm.config.layout)
    image_token_id(tok)
    ids, _ = build_example(vlm, tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    room = vlm.llm.config.block_size - len(ids)
    pv = preprocess(processor, [image]).to(device)                             # (1, 3, H, W)
    new = vlm.generate(torch.tensor([ids], device=device), pixel_values=pv, max_new_tokens=min(max_new_tokens, room),
                       temperature=temperature, eos_id=tok.im_end_id, on_token=on_token)
    return tok.decode([t for t in new[0].tolist() if t != tok.im_end_id], skip_special=True)
