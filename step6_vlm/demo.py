"""Talk to the VLM about a picture (图文对话), streaming the answer token by token.

    python demo.py --image test.jpg --prompt "描述这张图片"
    python demo.py --image test.jpg --prompt "左上的图形是什么颜色？" --stage pretrain   # compare stage 1
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import torch

from common import RUNS_DIR
from common.cli import SHARED_FLAGS, course_parser, run
from common.device import pick_device, seed_everything
from common.errors import CourseError
from step6_vlm.data import load_image, user_turn
from step6_vlm.model import build_example, image_token_id, load_vlm
from step6_vlm.vision import load_image_processor, preprocess

HERE = pathlib.Path(__file__).resolve().parent


def prepare_prompt(prompt: str, n_images: int = 1, layout: str = "question-first") -> str:
    """The prompt with exactly one <image> per image. A prompt without the placeholder (the usual case: the
    user just asks) gets it where the model was trained to see it, its layout; more placeholders than images
    are refused."""
    n = prompt.count("<image>")
    if n == 0 and n_images:
        return user_turn(prompt, layout)
    if n != n_images:
        raise CourseError(f"the prompt has {n} <image> placeholders but {n_images} image(s) were given; "
                          f"use exactly one <image> per image")
    return prompt


class Streamer:
    """Prints text as tokens arrive. Byte-level BPE can split one character across tokens, so only text
    that decodes completely (no trailing replacement character) is printed."""

    def __init__(self, tokenizer, stop_ids):
        self.tok, self.stop, self.ids, self.shown = tokenizer, set(stop_ids), [], ""

    def __call__(self, token: torch.Tensor):
        t = int(token[0])
        if t in self.stop:
            return
        self.ids.append(t)
        text = self.tok.decode(self.ids, skip_special=True)
        if not text.endswith("\ufffd"):
            print(text[len(self.shown):], end="", flush=True)
            self.shown = text


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


def main():
    p = course_parser("Ask the VLM about an image (图文对话演示)", *SHARED_FLAGS)
    p.add_argument("--image", default=str(HERE / "test.jpg"), help="图片 image file (jpg/png/...)")
    p.add_argument("--prompt", default="描述这张图片", help="问题 the question; <image> marks where the picture goes")
    p.add_argument("--stage", default="sft", choices=("pretrain", "sft"), help="哪个阶段的模型 which checkpoint: vlm_pretrain or vlm_sft")
    p.add_argument("--max-new-tokens", type=int, default=128, help="最多生成 token 数 most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="温度 0 = greedy (deterministic)")
    p.add_argument("--vision-encoder", default=None, help="视觉编码器 override the encoder named in the checkpoint")
    args = p.parse_args()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    image = load_image(args.image)  # bad image files are refused before any model is loaded
    ckpt = pathlib.Path(args.init) if args.init else RUNS_DIR / f"vlm_{args.stage}"
    vlm, tok, _ = load_vlm(ckpt, dev, vision_encoder=args.vision_encoder)
    proc = load_image_processor(vlm.config.vision_encoder)
    print(f"[{ckpt.name}] {args.prompt}", file=sys.stderr)
    answer(vlm, tok, proc, image, args.prompt, args.max_new_tokens, args.temperature,
           on_token=Streamer(tok, [tok.im_end_id, tok.eos_id]), device=dev)
    print()


if __name__ == "__main__":
    run(main)
