"""The image path's three classic mistakes, each a small change to model.py's VLM, so that they can be switched
on and measured (README 常见问题 1–3: `python debug.py --image-tokens first`, `--image-loss`; the lab's ablations).
model.py holds only the right way: one image token per patch, the loss on the answer alone."""
from step6_vlm.model import VLM


class FirstPatchVLM(VLM):
    """The first-patch bug (`vision_proj[i, img_idx]` with one index): one of the P patch features reaches the
    LLM, the other P−1 are dropped. Placeholders and features still agree in number, so a count check passes."""

    @property
    def tokens_per_image(self) -> int:
        return 1

    def image_embeds(self, features):
        return super().image_embeds(features)[:, :1]                  # (N, 1, C): the top-left patch only


class MeanPoolVLM(VLM):
    """The mean-pooling "fix": the P image tokens averaged into one (for the linear projection the same as
    averaging the features first). The whole picture is in it, but which thing sits in which cell is averaged
    away: shuffling the patches leaves the token unchanged."""

    @property
    def tokens_per_image(self) -> int:
        return 1

    def image_embeds(self, features):
        return super().image_embeds(features).mean(1, keepdim=True)   # (N, 1, C)


# what reaches the LLM from one picture: every patch (the VLM), the first patch, or their mean
IMAGE_TOKEN_MODES = {"all": VLM, "first": FirstPatchVLM, "mean": MeanPoolVLM}


def with_image_loss(examples, image_id: int) -> list:
    """The tempting change: labels on the image positions too. Each image position then has the next id as its
    target, which inside the block is `<image>` again: the model is taught to predict a placeholder."""
    return [(i, ids, [t if t == image_id else lab for t, lab in zip(ids, labels)]) for i, ids, labels in examples]
