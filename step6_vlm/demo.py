"""Talk to the VLM about a picture (图文对话), streaming the answer token by token.

    python demo.py --image test.jpg --prompt "描述这张图片"
    python demo.py --image test.jpg --prompt "左上的图形是什么颜色？" --stage pretrain   # compare stage 1
    python demo.py --init runs/vlm_sft --image my.png   # any VLM checkpoint folder

It prints the answer as it is generated (no JSON line: this is a conversation, not a measurement).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import pick_device, seed_everything
from step2_gpt.stream import TextStreamer
from step6_vlm.chat import answer
from step6_vlm.data import load_image
from step6_vlm.model import load_vlm
from step6_vlm.vision import load_image_processor

HERE = pathlib.Path(__file__).resolve().parent


def main():
    p = course_parser("Ask the VLM about an image (图文对话演示)", "device", "seed", "init")
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
    stream = TextStreamer(tok, lambda piece: print(piece, end="", flush=True), stop_ids=(tok.im_end_id, tok.eos_id))
    said = answer(vlm, tok, proc, image, args.prompt, args.max_new_tokens, args.temperature, on_token=stream, device=dev)
    stream.finish()
    if not said.strip():  # the model ended its turn at once: say so rather than print nothing
        print("（模型没有回答：它立刻结束了这一轮 / the model ended its turn without an answer）", end="")
    print()


if __name__ == "__main__":
    run(main)
