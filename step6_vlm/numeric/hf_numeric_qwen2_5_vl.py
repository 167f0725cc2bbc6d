"""The numeric idea on `transformers`' Qwen2.5-VL: the same numeric embedding, regression head and mixed loss as
model.py's NumericVLM, as a subclass of Qwen2_5_VLForConditionalGeneration (for a real 3B model where one is at hand).

    from step6_vlm.numeric.hf_numeric_qwen2_5_vl import (NumericQwen2_5_VLConfig,
        NumericQwen2_5_VLForConditionalGeneration, NumericQwen2_5_VLProcessor, tiny_config)
    model = NumericQwen2_5_VLForConditionalGeneration(tiny_config())          # random, offline (the tests)

With Qwen/Qwen2.5-VL-3B-Instruct downloaded (documented in the README, not tested here):
    proc = AutoProcessor.from_pretrained(path); proc.tokenizer.add_special_tokens({"additional_special_tokens": ["<num>"]})
    cfg = NumericQwen2_5_VLConfig.from_qwen(path, numeric_token_id=proc.tokenizer.convert_tokens_to_ids("<num>"))
    model = NumericQwen2_5_VLForConditionalGeneration.from_pretrained(path, config=cfg)   # the numeric layers start new
    model.resize_token_embeddings(len(proc.tokenizer)); nproc = NumericQwen2_5_VLProcessor(proc)

Only stable `transformers` API is used: the config's sub-configs, `self.model(...)` returning the last hidden
state first, `lm_head`, `get_input_embeddings`, save_pretrained / from_pretrained.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.utils import ModelOutput

from step6_vlm.numeric.model import scale, unscale
from step6_vlm.numeric.processor import NUM, split_numbers


class NumericQwen2_5_VLConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL's config plus the numeric parts: the MLP's width, the `<num>` id, α of the mixed loss."""
    model_type = "numeric_qwen2_5_vl"

    def __init__(self, numeric_embedding_dim: int = 512, numeric_token_id: int | None = None,
                 numeric_loss_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.numeric_embedding_dim = numeric_embedding_dim
        self.numeric_token_id = numeric_token_id
        self.numeric_loss_weight = numeric_loss_weight

    @classmethod
    def from_qwen(cls, name_or_path: str, **numeric) -> "NumericQwen2_5_VLConfig":
        """A Qwen2.5-VL checkpoint's config with the numeric parts added."""
        base = Qwen2_5_VLConfig.from_pretrained(name_or_path).to_dict()
        base.pop("model_type", None)
        return cls(**base, **numeric)


@dataclass
class NumericOutput(ModelOutput):
    loss: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None
    numeric_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    numeric_predictions: torch.Tensor | None = None   # (B, T) values (unscaled) the head reads at every position
    hidden_states: tuple | None = None


class NumericQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Text logits and numeric predictions. `numeric_values` (B, T): the value at each `<num>` input position
    (0 elsewhere); `labels` as in transformers (unshifted, −100 ignored); the MSE is read where the NEXT label is
    `<num>`, with that label's value from `numeric_labels` (default: numeric_values)."""
    config_class = NumericQwen2_5_VLConfig

    def __init__(self, config: NumericQwen2_5_VLConfig):
        super().__init__(config)
        H = config.text_config.hidden_size
        self.numeric_embedding = nn.Sequential(nn.Linear(1, config.numeric_embedding_dim), nn.GELU(),
                                               nn.Linear(config.numeric_embedding_dim, H))
        self.regression_head = nn.Linear(H, 1)
        self.post_init()
        with torch.no_grad():  # starts as a no-op on the <num> embedding (from_pretrained then loads saved weights)
            self.numeric_embedding[2].weight.zero_()
            self.numeric_embedding[2].bias.zero_()

    def numeric_embeds(self, input_ids, numeric_values) -> torch.Tensor:
        x = self.get_input_embeddings()(input_ids)                                    # (B, T, H)
        if numeric_values is None:
            return x
        is_num = (input_ids == self.config.numeric_token_id)[..., None]               # (B, T, 1)
        nv = self.numeric_embedding(scale(numeric_values).to(self.numeric_embedding[0].weight.dtype)[..., None])
        return torch.where(is_num, x + nv.to(x.dtype), x)

    def forward(self, input_ids=None, numeric_values=None, labels=None, numeric_labels=None, inputs_embeds=None,
                attention_mask=None, pixel_values=None, image_grid_thw=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.numeric_embeds(input_ids, numeric_values)
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         pixel_values=pixel_values, image_grid_thw=image_grid_thw, **kwargs)
        h = out[0]                                                                     # (B, T, H)
        logits = self.lm_head(h)                                                       # (B, T, V)
        pred = self.regression_head(h).squeeze(-1).float()                             # (B, T) scaled units
        loss = token_loss = numeric_loss = None
        if labels is not None:
            token_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
            where = labels[:, 1:] == self.config.numeric_token_id                      # (B, T-1): next token is <num>
            target = numeric_labels if numeric_labels is not None else numeric_values
            numeric_loss = (F.mse_loss(pred[:, :-1][where], scale(target[:, 1:][where])) if where.any() and target is not None
                            else pred.sum() * 0.0)
            loss = token_loss + self.config.numeric_loss_weight * numeric_loss
        return NumericOutput(loss=loss, token_loss=token_loss, numeric_loss=numeric_loss, logits=logits,
                             numeric_predictions=unscale(pred), hidden_states=getattr(out, "hidden_states", None))

    @torch.no_grad()
    def generate_with_numbers(self, input_ids, numeric_values=None, max_new_tokens: int = 32, eos_token_id=None,
                              **vision) -> tuple:
        """Greedy decoding of one prompt that feeds each `<num>`'s predicted value back as its numeric embedding.
        Recomputes the whole sequence each step (no cache): simple and exact, for short numeric answers.
        Returns (new ids (1, n), values (1, n))."""
        ids = input_ids
        vals = torch.zeros(ids.shape, device=ids.device) if numeric_values is None else numeric_values.float()
        start = ids.shape[1]
        for _ in range(max_new_tokens):
            o = self(input_ids=ids, numeric_values=vals, attention_mask=torch.ones_like(ids), **vision)
            nxt = o.logits[:, -1].argmax(-1, keepdim=True)                            # (1, 1)
            v = torch.where(nxt == self.config.numeric_token_id, o.numeric_predictions[:, -1:], torch.zeros_like(nxt, dtype=torch.float))
            ids, vals = torch.cat([ids, nxt], 1), torch.cat([vals, v], 1)
            if eos_token_id is not None and int(nxt) == eos_token_id:
                break
        return ids[:, start:], vals[:, start:]


class NumericQwen2_5_VLProcessor:
    """Wraps a processor (or tokenizer) whose vocabulary has `<num>`: text with `<num><value>` → its usual inputs
    + `numeric_values` (B, T), the values at the `<num>` positions in order; `decode` puts the values back."""

    def __init__(self, processor, numeric_token: str = NUM):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.numeric_token_id = self.tokenizer.convert_tokens_to_ids(numeric_token)
        if self.numeric_token_id is None or self.numeric_token_id == getattr(self.tokenizer, "unk_token_id", -1):
            raise ValueError(f"the tokenizer has no {numeric_token} token: add it with add_special_tokens first")

    def __call__(self, text, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        split = [split_numbers(t) for t in texts]
        plain = [NUM.join(pieces) for pieces, _ in split]                # "<num><12.5>" → "<num>", values aside
        enc = self.processor(text=plain, return_tensors="pt", padding=True, **kwargs)
        ids = enc["input_ids"]
        values = torch.zeros(ids.shape, dtype=torch.float32)
        for r, (_, nums) in enumerate(split):
            pos = (ids[r] == self.numeric_token_id).nonzero().flatten()
            if len(pos) != len(nums):
                raise ValueError(f"text {r}: {len(nums)} numbers but {len(pos)} {NUM} tokens after tokenizing")
            values[r, pos] = torch.tensor(nums, dtype=torch.float32)
        enc["numeric_values"] = values
        return enc

    def decode(self, ids, values, decimals: int = 1) -> str:
        out, run = [], []
        for i, v in zip(ids.tolist(), values.tolist()):
            if i == self.numeric_token_id:
                out.append(self.tokenizer.decode(run, skip_special_tokens=True) + f"{NUM}<{v:.{decimals}f}>")
                run = []
            else:
                run.append(i)
        return "".join(out) + self.tokenizer.decode(run, skip_special_tokens=True)


def tiny_config(vocab_size: int = 128, numeric_token_id: int = 5) -> NumericQwen2_5_VLConfig:
    """A randomly initialisable Qwen2.5-VL of a few hundred thousand parameters (offline tests, the README)."""
    return NumericQwen2_5_VLConfig(
        numeric_embedding_dim=32, numeric_token_id=numeric_token_id,
        text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=28),
        image_token_id=6, video_token_id=7, vision_start_token_id=8)
