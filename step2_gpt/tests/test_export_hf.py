"""Parity with transformers' LlamaForCausalLM: same logits (≤ 1e-4 fp32), same greedy tokens."""
import json

import pytest
import torch


pytest.importorskip("transformers")

from common.checkpoint import save_checkpoint
from common.errors import CourseError
from step2_gpt.export_hf import compare_logits, export_checkpoint, export_model, load_hf, same_greedy_tokens
from step1_tokenizer.model import train_bpe
from step2_gpt.model import GPT, GPTConfig


def randomized(cfg):
    """A model whose norm gains are not all 1, so the export of every weight is checked."""
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("extra", [{}, {"n_kv_head": 2, "tie_embeddings": False, "rope_theta": 500.0}])
def test_logits_and_greedy_tokens_match_transformers_llama(tmp_path, extra):
    model = randomized(GPTConfig.preset("tiny", vocab_size=256, block_size=128, **extra))
    hf = load_hf(export_model(model, tmp_path / "hf"))
    idx = torch.randint(0, 256, (2, 96))
    assert compare_logits(model, hf, idx) <= 1e-4
    assert same_greedy_tokens(model, hf, idx[:1, :8], 24)


def test_export_from_checkpoint_folder_with_tokenizer_file(tmp_path):
    tok = train_bpe(["小明有3个苹果。", "Tom has 3 apples."] * 20, 300)
    model = randomized(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, block_size=64, n_layer=2))
    ckpt = save_checkpoint(tmp_path / "ckpt", state_dict=model.state_dict(), step="gpt",
                           model_config=model.config.to_dict(), tokenizer=tok)
    out = export_checkpoint(ckpt, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert (config["eos_token_id"], config["pad_token_id"], config["bos_token_id"]) == (tok.eos_id, tok.pad_id, tok.bos_id)
    assert (out / "tokenizer.json").is_file()
    hf = load_hf(out)
    assert compare_logits(model, hf, torch.randint(0, tok.vocab_size, (1, 40))) <= 1e-4
    assert same_greedy_tokens(model, hf, torch.randint(0, tok.vocab_size, (1, 5)), 30)  # may stop at eos


def test_qk_norm_models_are_refused(tmp_path):
    model = GPT(GPTConfig.preset("tiny", vocab_size=64, n_layer=1, qk_norm=True))
    with pytest.raises(CourseError, match="qk_norm"):
        export_model(model, tmp_path / "hf")
