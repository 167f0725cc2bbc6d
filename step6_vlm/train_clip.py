"""Stage 0 on its own: train the small CLIP of small_clip.py on data-world pictures and captions (what
`python train.py` runs first when no pretrained CLIP is at hand).

    python train_clip.py                 # → runs/clip, prints zero-shot retrieval and a linear probe
    python train_clip.py --quick         # seconds-long smoke run

Last line: one JSON object with clip_retrieval_acc, clip_retrieval_acc_combo, retrieval_candidates,
probe_layer_-2, probe_layer_-1 (linear-probe accuracy per attribute), clip_params, clip_final_loss, clip_wall_s.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from common.cli import course_parser, run
from common.errors import CourseError
from common.training import print_summary
from step6_vlm.small_clip import train_clip
from step6_vlm.vision import CLIP_DIR


def main():
    p = course_parser("Stage 0: train a small CLIP on the data world (阶段0：在玩具世界上对比学习训练小CLIP)",
                      "device", "max_steps", "batch_size", "lr", "seed", "out", "quick", out=str(CLIP_DIR), lr=2e-3)
    p.add_argument("--steps", type=int, default=1500, help="优化步数 contrastive training steps")
    p.add_argument("--width", type=int, default=128, help="编码器宽度 transformer width of both towers")
    p.add_argument("--layers", type=int, default=4, help="视觉层数 vision transformer layers")
    p.add_argument("--images", type=int, default=8000, help="训练图像数 number of training scenes")
    p.add_argument("--shape-twins", type=int, default=3, help="形状孪生权重 draw a shape-changed twin this many times as often as each other kind")
    p.add_argument("--extra-colors", type=float, default=0.5, help="额外颜色比例 add this share of the training scenes again, painted in stage-0-only colours")
    args = p.parse_args()
    if args.shape_twins < 1:
        raise CourseError("--shape-twins is a weight: use 1 or more")
    if not 0 <= args.extra_colors <= 1:
        raise CourseError(f"--extra-colors is a share of the training scenes: give a number from 0 to 1, not {args.extra_colors}")
    steps = args.max_steps or (60 if args.quick else args.steps)
    n_images = 500 if args.quick else args.images
    m = train_clip(pathlib.Path(args.out), steps=steps, batch_pairs=args.batch_size or 128, lr=args.lr,
                   width=args.width, layers=args.layers, n_images=n_images, seed=args.seed, device=args.device,
                   shape_twins=args.shape_twins, extra_colors=args.extra_colors)
    print(f"zero-shot image→text retrieval among {m['retrieval_candidates']} held-out captions: "
          f"{m['clip_retrieval_acc']:.1%} (held-out combinations: {m['clip_retrieval_acc_combo']:.1%})")
    print(f"linear probe on frozen patch features (layer -2): {m['probe_layer_-2']}  (layer -1: {m['probe_layer_-1']})")
    print(f"saved to {args.out}; the VLM loads it with CLIPVisionModel.from_pretrained")
    print_summary(**m)


if __name__ == "__main__":
    run(main)
