"""Ask the numeric VLM about a chart: prints the answer with the numbers its regression head produced.

    python demo.py --image chart.png --prompt "红色柱子的数值是多少？"
    python demo.py                      # a bar chart drawn here, asked about one bar

Final line: a JSON object {"answer": text, "numbers": [values]}.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import argparse
import random

import torch

from common import RUNS_DIR
from common.cli import run
from common.device import pick_device
from common.training import print_summary
from step6_vlm.data import load_image, user_turn
from step6_vlm.numeric.data import bar_chart, bar_questions, render_bars
from step6_vlm.numeric.model import load_numeric
from step6_vlm.numeric.scoring import answers
from step6_vlm.vision import load_image_processor, preprocess


def main():
    p = argparse.ArgumentParser(description="Numeric VLM demo (数值 VLM 演示)")
    p.add_argument("--checkpoint", default=str(RUNS_DIR / "vlm_numeric"), help="检查点 made by numeric/train.py")
    p.add_argument("--image", default=None, help="图片 a chart picture (default: one drawn here)")
    p.add_argument("--prompt", default=None, help="问题 the question")
    p.add_argument("--device", default="auto", help="设备 device: auto, cpu, cuda, mps")
    a = p.parse_args()
    model, tok, _ = load_numeric(a.checkpoint, pick_device(a.device))
    if a.image:
        img, prompt = load_image(a.image), a.prompt or "图中的数值是多少？"
    else:
        chart = bar_chart(random.Random(0), out_of_range=False)
        img = render_bars(chart["values"], chart["colors"])
        _, _, q, truth = bar_questions(chart, random.Random(1), False)[0]
        prompt = a.prompt or q
        print(f"(a chart drawn here: values {chart['values']}; the right answer: {truth})")
    pv = preprocess(load_image_processor(model.vlm.config.vision_encoder), [img])
    with torch.no_grad():
        feats = model.image_features(pv.to(next(model.parameters()).device)).cpu()
    sample = {"image_index": 0, "messages": [{"role": "user", "content": user_turn(prompt, model.vlm.config.layout)},
                                             {"role": "assistant", "content": ""}]}
    (text, numbers), = answers(model, tok, [sample], feats)
    print(f"Q: {prompt}\nA: {text}\nnumbers from the {'regression head' if model.numbers == 'num' else 'digits'}: "
          f"{[round(v, 3) for v in numbers]}")
    print_summary(answer=text, numbers=numbers)


if __name__ == "__main__":
    run(main)
