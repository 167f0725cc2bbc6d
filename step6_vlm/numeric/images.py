"""The pictures of a numeric data set as model inputs: each file once, as pixels, and as patch features."""
from pathlib import Path

import torch

from step6_vlm.data import load_image
from step6_vlm.vision import preprocess


def index_images(samples, processor, offset: int = 0) -> torch.Tensor:
    """Give each sample an "image_index" into the returned pixel_values (N, 3, H, W); each file is read once."""
    order = {}
    for s in samples:
        s["image_index"] = offset + order.setdefault(str(s["image"]), len(order))
    return preprocess(processor, [load_image(Path(p)) for p in order])


@torch.no_grad()
def all_features(model, pixels: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, P, D) patch features of every picture under the model's (possibly fine-tuned) encoder."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model.image_features(pixels[k:k + batch_size].to(dev)).cpu()
                      for k in range(0, len(pixels), batch_size)])
