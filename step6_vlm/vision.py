"""The frozen vision side of the VLM: which CLIP to load, its own image processor, patch features, and the
feature cache (the encoder never changes, so each image's features are computed once, keyed by encoder+image).
"""
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common import REPO_ROOT, RUNS_DIR
from common.errors import CourseError
from common.files import atomic_folder

OPENAI_CLIP = "openai/clip-vit-base-patch16"   # the real encoder (196 patches × 768 at 224²)
CLIP_DIR = RUNS_DIR / "clip"                     # stage 0's small CLIP (9 patches at 63²)
CACHE_DIR = RUNS_DIR / "feature_cache"
OFFLINE_HINT = ("offline: download it once where there is network (it lands in ~/.cache/huggingface), or train "
                "the course's small CLIP with `python step6_vlm/train.py --stage clip` and pass "
                "--vision-encoder runs/clip")


def hub_cached(repo_id: str) -> bool:
    """True when a hub model's config and weights are already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    have = lambda f: isinstance(try_to_load_from_cache(repo_id, f), str)  # noqa: E731
    return have("config.json") and (have("model.safetensors") or have("pytorch_model.bin"))


def default_vision_encoder() -> str:
    """The seed's encoder when it can be loaded without a download (local cache), else the small CLIP of stage 0."""
    return OPENAI_CLIP if hub_cached(OPENAI_CLIP) else str(CLIP_DIR)


def _resolve(name_or_path: str) -> str:
    p = Path(name_or_path)
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        p = REPO_ROOT / p  # "runs/clip" works from any folder, like every default path in the course
    return str(p) if p.exists() else name_or_path


def _silence_transformers():
    from transformers.utils import logging
    logging.set_verbosity_error()


def _processor_class():
    """CLIP's image processor on its PIL path (no torchvision needed). transformers ≥ 5.2x names the PIL backend
    explicitly; earlier 5.x releases use the plain class on PIL images. The one place that knows the difference."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Proc
    except ImportError:
        from transformers import CLIPImageProcessor as Proc
    return Proc


def new_image_processor(size: int):
    """A fresh CLIP image processor for size×size pictures (the small CLIP of stage 0 and the tests' tiny ones)."""
    return _processor_class()(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load_image_processor(name_or_path: str):
    """CLIP's own image processor (resize, centre crop, normalise with CLIP's mean/std) saved with an encoder.
    Converts any input to RGB."""
    _silence_transformers()
    src = _resolve(name_or_path)
    try:
        proc = _processor_class().from_pretrained(src)
    except Exception as e:
        raise CourseError(f"cannot load the image processor of --vision-encoder {name_or_path} "
                          f"({type(e).__name__}); {OFFLINE_HINT}") from None
    proc.do_convert_rgb = True
    return proc


def load_vision_encoder(name_or_path: str, device="cpu"):
    """(frozen CLIPVisionModel in eval mode, its image processor). The same call loads the real
    openai/clip-vit-base-patch16 and the course's small CLIP saved by stage 0."""
    from transformers import CLIPVisionModel
    _silence_transformers()
    src = _resolve(name_or_path)
    local = Path(src).exists()
    if local and not (Path(src) / "config.json").is_file():
        raise CourseError(f"--vision-encoder {name_or_path} is a folder without config.json: not a saved CLIP model")
    if not local and (Path(name_or_path).parts[:1] in (("runs",), ("..",), (".",)) or str(name_or_path).startswith("/")):
        raise CourseError(f"--vision-encoder {name_or_path} does not exist; make it with "
                          f"`python step6_vlm/train.py --stage clip`")
    try:
        enc = CLIPVisionModel.from_pretrained(src)
    except Exception as e:
        raise CourseError(f"cannot load --vision-encoder {name_or_path} ({type(e).__name__}); {OFFLINE_HINT}") from None
    enc.requires_grad_(False).eval().to(device)  # frozen: no gradients, no dropout
    return enc, load_image_processor(src)


def image_size(processor) -> int:
    crop = getattr(processor, "crop_size", None) or {}
    return int(crop.get("height") or processor.size.get("shortest_edge"))


def preprocess(processor, images) -> torch.Tensor:
    """PIL images → pixel_values (B, 3, H, W), exactly as the encoder was trained to see them."""
    return processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


@torch.no_grad()
def patch_features(encoder, pixel_values: torch.Tensor, feature_layer: int = -2, batch_size: int = 256) -> torch.Tensor:
    """The frozen encoder's patch features (B, P, D): hidden states of `feature_layer` without the CLS
    token. LLaVA takes the second-to-last layer (-2): the last one is shaped for the contrastive objective."""
    dev = next(encoder.parameters()).device
    out = []
    for i in range(0, len(pixel_values), batch_size):
        hs = encoder(pixel_values=pixel_values[i:i + batch_size].to(dev), output_hidden_states=True).hidden_states
        out.append(hs[feature_layer][:, 1:].float().cpu())  # (b, 1+P, D) → (b, P, D)
    return torch.cat(out)


def encoder_key(name_or_path: str, feature_layer: int) -> str:
    """Identity of (encoder weights, feature layer): a retrained CLIP gets a new key, so stale features are never reused."""
    src = Path(_resolve(name_or_path))
    h = hashlib.sha1(f"{feature_layer}".encode())
    if src.is_dir():
        for f in sorted(src.iterdir()):
            if f.suffix in (".json", ".safetensors", ".bin"):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}".encode())
                h.update(f.read_bytes() if st.st_size < 64_000_000 else str(st.st_mtime_ns).encode())
    else:
        h.update(str(name_or_path).encode())
    return h.hexdigest()[:16]


class FeatureCache:
    """features[image_key] = (P, D) frozen patch features of one image under one encoder.
    Stored as one stacked safetensors file plus a JSON index per encoder key, rewritten atomically."""

    def __init__(self, enc_key: str, root=CACHE_DIR, enabled: bool = True):
        self.dir = Path(root) / enc_key
        self.enabled = enabled
        self.index, self.feats = {}, None
        if enabled and (self.dir / "index.json").is_file():
            try:
                self.index = json.loads((self.dir / "index.json").read_text())
                self.feats = load_file(str(self.dir / "features.safetensors"))["features"]
            except Exception:  # a damaged cache is only a cache: start afresh
                self.index, self.feats = {}, None

    def missing(self, keys) -> list:
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def add(self, keys, feats: torch.Tensor) -> None:
        start = 0 if self.feats is None else len(self.feats)
        for i, k in enumerate(keys):
            self.index[k] = start + i
        self.feats = feats.float().contiguous() if self.feats is None else torch.cat([self.feats, feats.float()])

    def get(self, keys) -> torch.Tensor:
        return self.feats[torch.tensor([self.index[k] for k in keys], dtype=torch.long)]  # (N, P, D)

    def save(self) -> None:
        if not self.enabled or self.feats is None:
            return
        with atomic_folder(self.dir) as tmp:
            save_file({"features": self.feats}, str(tmp / "features.safetensors"))
            (tmp / "index.json").write_text(json.dumps(self.index))


def cached_features(encoder, processor, keys, make_image, enc_key: str, feature_layer: int = -2,
                    cache_root=CACHE_DIR, use_cache: bool = True) -> tuple:
    """Features for images named by `keys`; `make_image(key)` gives the PIL image of a key not cached yet.
    Returns ((N, P, D) features in the order of keys, number of images the encoder had to run on)."""
    cache = FeatureCache(enc_key, cache_root, enabled=use_cache)
    todo = cache.missing(keys)
    if todo:
        pv = preprocess(processor, [make_image(k) for k in todo])
        cache.add(todo, patch_features(encoder, pv, feature_layer))
        cache.save()
    return cache.get(keys), len(todo)
