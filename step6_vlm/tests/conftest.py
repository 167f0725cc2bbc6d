"""Tiny stand-ins for the real parts (tokenizer, GPT, CLIP) so step 6's tests run offline in seconds."""
import random

import pytest
import torch


@pytest.fixture(scope="session")
def tok():
    from common.world import generate_docs
    from step1_tokenizer.model import train_bpe
    from step6_vlm.data import CAPTION_PROMPTS, caption_messages, question, world_splits
    # world captions and questions, so the tiny vocabulary covers what the tests say
    rng = random.Random(0)
    texts = generate_docs(20_000, 0)
    for s in world_splits(60, 5, 5).train:
        for lang in ("zh", "en"):
            texts.append(caption_messages(s, lang)[1]["content"])
            for qt in ("color", "shape", "count", "position"):
                texts += list(question(qt, s, rng, lang) or ())
    texts += list(CAPTION_PROMPTS.values()) + ["user", "assistant"]
    return train_bpe(texts, 420)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """A small, random CLIP saved like stage 0 saves its own: save_pretrained + the image processor."""
    from transformers import CLIPModel
    from step6_vlm.small_clip import CaptionVocab, small_clip_config
    from step6_vlm.vision import new_image_processor
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    model = CLIPModel(small_clip_config(len(CaptionVocab.for_world().words), width=32, layers=2, heads=2, text_layers=1,
                                        text_width=32))
    model.save_pretrained(path)
    new_image_processor(63).save_pretrained(path)
    return path


def make_vlm(tok, clip_dir=None, n_embd=64, n_layer=2, block_size=256, image_tokens="all", **cfg):
    from step2_gpt.model import GPT, GPTConfig
    from step6_vlm.model import VLMConfig, image_token_id
    from step6_vlm.pitfalls import IMAGE_TOKEN_MODES
    vision = None
    if clip_dir is not None:
        from step6_vlm.vision import load_vision_encoder
        vision, _ = load_vision_encoder(str(clip_dir))
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=n_embd))
    return IMAGE_TOKEN_MODES[image_tokens](gpt, VLMConfig(str(clip_dir), 32, 9, 63, image_token_id(tok), **cfg), vision)
