"""Step 6: the vision-language model. VLM = frozen CLIP vision encoder → projection → the course's GPT.

    python model.py --demo      # the architecture with this model's real shapes, and the freeze table

An image becomes patch features (P × D) in the frozen encoder; the projection maps each to the GPT's width
(C); the `<image>` placeholder in the text is expanded to one token per patch and those positions get the
projected features instead of a word embedding. From there the GPT runs exactly as on text.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn

from common.errors import CourseError
from step2_gpt.model import GPT, GPTConfig
from step6_vlm.data import LAYOUTS

# ----------------------------------------------------------------------------------------------------
# The two-stage freeze table. Read a row as: in this stage, this part is frozen / trained.
#
#  stage         vision encoder   projection   LLM
FREEZE_TABLE = {
    "pretrain": ("frozen",        "trained",   "stage1"),   # image → caption: align image tokens with words
    "sft":      ("frozen",        "trained",   "all"),      # image + question → answer: learn to follow
}
# What "stage1" means for the LLM is a choice, named here: minimind-v and LLaVA-1 keep the LLM frozen and train
# only the projection ("frozen"); "last_n" trains the top few blocks too; "all" trains everything. The default is
# "all": a large LLM already knows how to say what it is shown, a 4-layer one does not, and with the LLM frozen
# stage 1 never learns to describe a picture (README 问题 4 has the measured rows).
STAGE1_LLM_CHOICES = ("last_n", "frozen", "all")
DEFAULT_STAGE1_LLM, DEFAULT_LAST_N = "all", 2


def llm_trainable_names(llm: GPT, setting: str, last_n: int = DEFAULT_LAST_N) -> set:
    """Names of the LLM parameters that a setting trains. last_n: the top `last_n` blocks and the final
    norm; the embedding table (tied to the output head) stays as it was, so words keep their meaning."""
    names = {n for n, _ in llm.named_parameters()}
    if setting == "all":
        return names
    if setting == "frozen":
        return set()
    if setting == "last_n":
        first = len(llm.blocks) - min(last_n, len(llm.blocks))
        return {n for n in names if n.startswith("norm.") or
                (n.startswith("blocks.") and int(n.split(".")[1]) >= first)}
    raise CourseError(f"unknown stage-1 LLM setting {setting!r}; choose one of {', '.join(STAGE1_LLM_CHOICES)}")


def apply_freeze(vlm: "VLM", stage: str, stage1_llm: str = DEFAULT_STAGE1_LLM, last_n: int = DEFAULT_LAST_N) -> dict:
    """Set requires_grad by FREEZE_TABLE[stage]; returns the trainable parameter count per module."""
    if stage not in FREEZE_TABLE:
        raise CourseError(f"unknown stage {stage!r}; choose one of {', '.join(FREEZE_TABLE)}")
    vision, projection, llm = FREEZE_TABLE[stage]
    if vlm.vision is not None:
        vlm.vision.requires_grad_(vision == "trained")
    for p in connector_params(vlm):
        p.requires_grad_(projection == "trained")
    keep = llm_trainable_names(vlm.llm, stage1_llm if llm == "stage1" else llm, last_n)
    for name, p in vlm.llm.named_parameters():
        p.requires_grad_(name in keep)
    return trainable_counts(vlm)


def connector_params(vlm: "VLM") -> list:
    """The freeze table's "projection" column: the projection and, when used, the image-slot positions."""
    return [*vlm.projection.parameters(), *([vlm.image_pos] if vlm.image_pos is not None else [])]


def trainable_counts(vlm: "VLM") -> dict:
    parts = {"vision": list(vlm.vision.parameters()) if vlm.vision is not None else [],
             "projection": connector_params(vlm), "llm": list(vlm.llm.parameters())}
    return {k: sum(p.numel() for p in ps if p.requires_grad) for k, ps in parts.items()}


# ----------------------------------------------------------------------------------------------------
# The model


@dataclass
class VLMConfig:
    vision_encoder: str          # HF id or folder, loaded with CLIPVisionModel.from_pretrained
    vision_dim: int              # D: width of the encoder's patch features
    n_patches: int               # P: patches per image (196 for ViT-B/16 at 224², 9 for the small CLIP)
    image_size: int              # the encoder's input side in pixels
    image_token_id: int          # the tokenizer's id of "<image>"
    projector: str = "linear"    # "linear" (LLaVA-1, no bias) or "mlp" (Linear–GELU–Linear)
    feature_layer: int = -2      # which encoder layer's hidden states (LLaVA: second to last)
    image_positions: str = "learned"  # "learned": a trained vector per image-token slot after the projection; "none"
    layout: str = "question-first"  # where <image> goes in a user turn: after the question, or "image-first" (LLaVA)

    @classmethod
    def from_dict(cls, d: dict) -> "VLMConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise CourseError(f"VLM config has unknown keys {sorted(unknown)}")
        return cls(**d)


def make_projection(kind: str, vision_dim: int, n_embd: int) -> nn.Module:
    if kind == "linear":  # LLaVA-1 / minimind-v: one matrix W, no bias
        return nn.Linear(vision_dim, n_embd, bias=False)
    if kind == "mlp":     # LLaVA-1.5: two layers with a GELU between
        return nn.Sequential(nn.Linear(vision_dim, n_embd), nn.GELU(), nn.Linear(n_embd, n_embd))
    raise CourseError(f"unknown --projector {kind!r}; choose linear or mlp")


class VLM(nn.Module):
    """`vision` may be None: training from cached features never needs the encoder itself."""

    def __init__(self, llm: GPT, config: VLMConfig, vision=None):
        super().__init__()
        self.config, self.llm, self.vision = config, llm, vision
        if config.image_positions not in ("none", "learned"):
            raise CourseError(f"unknown image_positions {config.image_positions!r}; choose none or learned")
        if config.layout not in LAYOUTS:
            raise CourseError(f"unknown layout {config.layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.projection = make_projection(config.projector, config.vision_dim, llm.config.n_embd)
        # Which slot (grid cell) an image token is. The LLM's RoPE only gives distances, and the question's
        # length moves those; a patch feature must say where it is itself. The small CLIP of stage 0 mostly
        # loses that (train_clip.py's probe "cell"), so "the shape at the top left" cannot be found by content.
        # One trained vector per slot gives it back. Started at the projected features' scale (~1 per
        # dimension), so the slots differ from the first step. Trained with the projection (the freeze table).
        self.image_pos = (nn.Parameter(torch.randn(self.tokens_per_image, llm.config.n_embd))
                          if config.image_positions == "learned" else None)

    @property
    def tokens_per_image(self) -> int:
        """One image token per patch (LLaVA): the LLM sees every cell of the picture (pitfalls.py: what if not)."""
        return self.config.n_patches

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, H, W) → frozen patch features (N, P, D)."""
        from step6_vlm.vision import patch_features
        if self.vision is None:
            raise CourseError("this VLM was built without its vision encoder; pass image features instead")
        return patch_features(self.vision, pixel_values, self.config.feature_layer)

    def image_embeds(self, features: torch.Tensor) -> torch.Tensor:
        """Frozen features (N, P, D) → image tokens (N, P, C) in the LLM's embedding space."""
        if features.dim() != 3 or features.shape[1:] != (self.config.n_patches, self.config.vision_dim):
            raise CourseError(f"image features must be (N, {self.config.n_patches}, {self.config.vision_dim}), "
                              f"got {tuple(features.shape)}: were they made by another vision encoder?")
        w = next(self.projection.parameters())
        x = self.projection(features.to(w.dtype))            # (N, P, C)
        return x if self.image_pos is None else x + self.image_pos.to(x.dtype)

    def expand(self, ids: list, mask: list | None = None) -> tuple:
        """One `<image>` id → tokens_per_image copies. The mask (loss mask) is 0 on all of them: image
        positions are inputs to read, never targets to predict."""
        img, n = self.config.image_token_id, self.tokens_per_image
        out_ids, out_mask = [], []
        for k, t in enumerate(ids):
            reps = n if t == img else 1
            out_ids += [t] * reps
            out_mask += [0 if t == img else (mask[k] if mask is not None else 0)] * reps
        return out_ids, out_mask

    def splice(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, T, C) with the image placeholders replaced by image tokens, in order:
        image_embeds (N, n, C) fill the placeholders row by row (sequence 0's images first)."""
        x = self.llm.embed(input_ids)                              # (B, T, C)
        is_img = input_ids == self.config.image_token_id           # (B, T)
        n_slots = int(is_img.sum())
        n_feats = 0 if image_embeds is None else image_embeds.shape[0] * image_embeds.shape[1]
        if n_slots != n_feats:
            n_img = 0 if image_embeds is None else image_embeds.shape[0]
            raise CourseError(f"the text has {n_slots} image-token positions ({n_slots / self.tokens_per_image:g} "
                              f"<image> placeholders) but {n_img} image(s) give {n_feats} features: "
                              f"use exactly one <image> per image")
        if n_slots == 0:
            return x
        return x.masked_scatter(is_img[..., None], image_embeds.to(x.dtype))  # (B, T, C), differentiable in both

    def forward(self, input_ids, targets=None, image_features=None, pixel_values=None):
        """input_ids (B, T) already expanded; targets (B, T) shifted, −100 where no loss. Images as cached
        features (N, P, D) or as pixel_values (N, 3, H, W). Returns (logits (B, T, V), loss or None)."""
        if image_features is None and pixel_values is not None:
            image_features = self.encode_images(pixel_values)
        emb = None if image_features is None else self.image_embeds(image_features)
        return self.llm(inputs_embeds=self.splice(input_ids, emb), targets=targets)

    @torch.no_grad()
    def generate(self, input_ids, image_features=None, pixel_values=None, **kw) -> torch.Tensor:
        """Greedy/sampled continuation (step 2's generate, fed the spliced embeddings). Returns new ids."""
        if image_features is None and pixel_values is not None:
            image_features = self.encode_images(pixel_values)
        emb = None if image_features is None else self.image_embeds(image_features)
        return self.llm.generate(inputs_embeds=self.splice(input_ids, emb), **kw)


def image_token_id(tokenizer) -> int:
    """The tokenizer's `<image>` id, or a clear refusal: a text-only vocabulary cannot mark images."""
    tid = getattr(tokenizer, "special_tokens", {}).get("<image>")
    if tid is None:
        raise CourseError("the checkpoint's tokenizer has no <image> token, so it cannot mark where an image goes; "
                          "use a tokenizer from step 1 of this course (python step1_tokenizer/train.py)")
    return tid


def build_example(vlm: VLM, tokenizer, messages, add_generation_prompt: bool = False) -> tuple:
    """Chat messages → (ids, labels) of one sequence, image placeholders expanded. labels = ids on the
    answer tokens, −100 elsewhere (prompt, template, image positions). Checks that it fits the context."""
    ids, mask = tokenizer.render_conversation(messages, add_generation_prompt=add_generation_prompt)
    ids, mask = vlm.expand(ids, mask)
    limit = vlm.llm.config.block_size
    if len(ids) > limit:
        raise CourseError(f"the conversation needs {len(ids)} positions after expanding <image> into "
                          f"{vlm.tokens_per_image} image tokens, more than the model's context of {limit}; shorten it")
    return ids, [t if m else -100 for t, m in zip(ids, mask)]


def save_vlm(folder, vlm: VLM, tokenizer, step: str, **kw):
    """A course checkpoint (common.checkpoint) with projection + LLM weights; the frozen encoder is named, not copied."""
    from common.checkpoint import save_checkpoint
    sd = {k: v for k, v in vlm.state_dict().items() if not k.startswith("vision.")}
    return save_checkpoint(folder, state_dict=sd, step=step, tokenizer=tokenizer,
                           model_config={"vlm": asdict(vlm.config), "llm": vlm.llm.config.to_dict()}, **kw)


def load_vlm(path, device="cpu", with_vision: bool = True, vision_encoder: str | None = None):
    """(VLM in eval mode, tokenizer, Checkpoint) from runs/vlm_sft or runs/vlm_pretrain."""
    from common.checkpoint import check_vocab, load_checkpoint
    from step1_tokenizer.model import Tokenizer
    ckpt = load_checkpoint(path, expect_steps=("vlm_pretrain", "vlm_sft"), hint="python step6_vlm/train.py")
    tok = Tokenizer.load(ckpt.path)
    check_vocab(ckpt, tok.vocab_size, model_vocab=ckpt.model_config.get("llm", {}).get("vocab_size"))
    cfg = VLMConfig.from_dict(ckpt.model_config["vlm"])
    if vision_encoder:
        cfg.vision_encoder = vision_encoder
    vision = None
    if with_vision:
        from step6_vlm.vision import load_vision_encoder
        vision, _ = load_vision_encoder(cfg.vision_encoder, device)
    vlm = VLM(GPT(GPTConfig.from_dict(ckpt.model_config["llm"])), cfg, vision)
    missing, unexpected = vlm.load_state_dict(ckpt.state_dict, strict=False)
    if unexpected or [k for k in missing if not k.startswith("vision.")]:
        raise CourseError(f"{ckpt.path}: weights do not fit the VLM config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return vlm.to(device).eval(), tok, ckpt


# ----------------------------------------------------------------------------------------------------
# python model.py --demo


def demo():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from step6_vlm.data import IMAGE_SIZE, caption_messages, render_scene
    from step6_vlm.vision import CLIP_DIR, load_vision_encoder, new_image_processor, preprocess
    from step1_tokenizer.model import course_tokenizer
    from common.world import random_scene
    import random

    if (CLIP_DIR / "config.json").is_file():
        vision, proc = load_vision_encoder(str(CLIP_DIR))
        src = f"{CLIP_DIR} (stage 0's small CLIP)"
    else:  # no stage 0 yet: the same architecture, random weights (shapes are what the demo shows)
        from step6_vlm.small_clip import small_clip_config
        vision = CLIPVisionModel(small_clip_config(64).vision_config).eval()
        proc = new_image_processor(IMAGE_SIZE)
        src = "small CLIP architecture, random weights (run train.py --stage clip to train it)"
    tok = course_tokenizer(fallback=True)
    vc = vision.config
    cfg = VLMConfig(src, vc.hidden_size, (vc.image_size // vc.patch_size) ** 2, vc.image_size, image_token_id(tok))
    vlm = VLM(GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size)), cfg, vision).eval()
    scene = random_scene(random.Random(0))
    img = render_scene(scene)
    pv = preprocess(proc, [img])                                        # (1, 3, H, W)
    feats = vlm.encode_images(pv)                                       # (1, P, D)
    emb = vlm.image_embeds(feats)                                       # (1, P, C)
    ids, labels = build_example(vlm, tok, caption_messages(scene, "zh", cfg.layout))
    logits, loss = vlm(torch.tensor([ids]), image_features=feats)
    g, P, D, C = vc.image_size // vc.patch_size, cfg.n_patches, cfg.vision_dim, vlm.llm.config.n_embd
    b16 = CLIPVisionConfig(patch_size=16)  # openai/clip-vit-base-patch16's shapes, for comparison
    print(f"""== VLM architecture, real shapes (vision encoder: {src})

  image 图片  {tuple(pv.shape)}  ({vc.image_size}×{vc.image_size} pixels; the world's 3×3 grid = {g}×{g} patches of {vc.patch_size} px)
      ↓  Vision Encoder: CLIP ViT, {vc.num_hidden_layers} layers, FROZEN 冻结   → hidden states of layer {cfg.feature_layer}, CLS dropped
  patch features  {tuple(feats.shape)}  = {P} patches × {D}     (ViT-B/16 at 224²: {(b16.image_size // 16) ** 2} × {b16.hidden_size})
      ↓  Projection: {vlm.projection}, + one learned vector per slot ({cfg.image_positions})   TRAINED 可训练
  image tokens    {tuple(emb.shape)}  = {P} tokens × {C} (the GPT's width)
      ↓  "<image>" in the prompt → {P} placeholder ids, their embeddings replaced by the image tokens
  sequence  [<|im_start|>user\\n这个图像中有什么内容？\\n img_1 … img_{P} <|im_end|> … answer]  = {len(ids)} positions
            (layout {cfg.layout}: the question comes first, so every image token can attend to it)
      ↓  LLM: course GPT, {vlm.llm.config.n_layer} layers × {C} wide
  logits  {tuple(logits.shape)}  → text 文本输出
  labels: −100 on {sum(1 for t in labels if t == -100)} of {len(labels)} positions (prompt, template, all {P} image tokens)
""")
    print("== freeze table 冻结表: trainable parameters per module and stage\n")
    cols = ("vision", "projection", "llm")
    print(f"  {'stage':<10}" + "".join(f"{h:<24}" for h in ("vision encoder", "projection", "LLM")))
    for stage in FREEZE_TABLE:
        n = apply_freeze(vlm, stage)
        words = [w if w != "stage1" else DEFAULT_STAGE1_LLM for w in FREEZE_TABLE[stage]]
        print(f"  {stage:<10}" + "".join(f"{w:<11}{n[k]:>11,}  " for w, k in zip(words, cols)))
    total = {k: sum(p.numel() for p in ps) for k, ps in
             (("vision", vlm.vision.parameters()), ("projection", connector_params(vlm)), ("llm", vlm.llm.parameters()))}
    print(f"  {'(total)':<10}" + "".join(f"{'':<11}{total[k]:>11,}  " for k in cols))


def main():
    from common.cli import run
    if "--demo" in sys.argv[1:] or len(sys.argv) == 1:
        run(demo)
    else:
        print("usage: python model.py --demo")


if __name__ == "__main__":
    main()
