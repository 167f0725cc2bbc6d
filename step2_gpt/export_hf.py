"""Export a course GPT checkpoint as a Hugging Face `LlamaForCausalLM` folder (config.json + model.safetensors,
plus tokenizer.json when the checkpoint has one), so the wider ecosystem (transformers, vLLM, llama.cpp's
converters, ...) can load the student's model.

    python export_hf.py --init ../runs/pretrain --out ../runs/hf_llama --check

Our architecture is Llama's: only names differ, plus one fused matrix to split (qkv → q_proj/k_proj/v_proj).
RoPE uses the same "rotate half" channel pairing as transformers, so no permutation is needed.
The config is written by hand with long-standing keys only, so older transformers 5.x versions load it too.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from common import RUNS_DIR
from common.errors import CourseError
from common.files import atomic_folder
from step2_gpt.model import GPT, GPT_STEPS, GPTConfig, load_gpt, newest_gpt_checkpoint

SPECIAL_NAMES = {"bos": "<|bos|>", "eos": "<|eos|>", "pad": "<|pad|>"}


def hf_config(cfg: GPTConfig, special_ids: dict | None = None) -> dict:
    """LlamaConfig fields for our GPTConfig. special_ids: {"bos": id, "eos": id, "pad": id} when known."""
    if cfg.qk_norm:
        raise CourseError("this model uses qk_norm (RMSNorm on q and k), which LlamaForCausalLM does not have; "
                          "train with qk_norm=False (step 3: python step3_pretrain/train.py --no-qk-norm) to export to Llama")
    special_ids = special_ids or {}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers 4.x reads this key ...
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # ... and 5.x this one
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": special_ids.get("bos"),
        "eos_token_id": special_ids.get("eos"),
        "pad_token_id": special_ids.get("pad"),
        "torch_dtype": "float32",
    }


def hf_state_dict(model: GPT) -> dict:
    """Our parameter names → transformers Llama names, splitting the fused qkv matrix."""
    cfg = model.config
    q_rows, kv_rows = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    out = {"model.embed_tokens.weight": model.tok_embeddings.weight, "model.norm.weight": model.norm.weight}
    for i, b in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = b.attn.qkv.weight.split([q_rows, kv_rows, kv_rows], dim=0)  # rows = output features
        out.update({
            p + "input_layernorm.weight": b.attn_norm.weight,
            p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": b.attn.proj.weight,
            p + "post_attention_layernorm.weight": b.mlp_norm.weight,
            p + "mlp.gate_proj.weight": b.mlp.gate.weight, p + "mlp.up_proj.weight": b.mlp.up.weight, p + "mlp.down_proj.weight": b.mlp.down.weight,
        })
    if not cfg.tie_embeddings:  # tied: transformers re-ties lm_head to embed_tokens itself
        out["lm_head.weight"] = model.lm_head.weight
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def _special_ids_from_tokenizer_json(path: Path) -> dict:
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens", [])
    by_content = {t["content"]: t["id"] for t in added}
    return {k: by_content[s] for k, s in SPECIAL_NAMES.items() if s in by_content}


def export_model(model: GPT, out_dir, tokenizer_json=None) -> Path:
    """Write `model` as a LlamaForCausalLM folder, atomically; copy tokenizer_json (a path) next to it if given."""
    out = Path(out_dir)
    special = {}
    with atomic_folder(out) as tmp:
        if tokenizer_json is not None and Path(tokenizer_json).is_file():
            shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
            special = _special_ids_from_tokenizer_json(Path(tokenizer_json))
            written = Path(tokenizer_json).with_name("tokenizer_config.json")  # step 1 writes one (chat template)
            if written.is_file():
                shutil.copyfile(written, tmp / "tokenizer_config.json")
            else:
                tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.config.block_size,
                           **{f"{k}_token": SPECIAL_NAMES[k] for k in special}}
                (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False))
        config = hf_config(model.config, special)
        save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        gen = {k + "_token_id": v for k, v in special.items()}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return out


def export_checkpoint(ckpt_dir, out_dir) -> Path:
    """A course checkpoint folder (any step whose model is our GPT) → a LlamaForCausalLM folder."""
    model, _, ckpt = load_gpt(ckpt_dir, expect_steps=GPT_STEPS, hint="python step2_gpt/train.py")
    return export_model(model, out_dir, ckpt.path / "tokenizer.json")


def load_hf(folder):
    """Load an exported folder with transformers, offline, in fp32 and eval mode."""
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(str(folder), local_files_only=True)
    return model.float().eval()


@torch.no_grad()
def compare_logits(model: GPT, hf_model, idx) -> float:
    """Max |ours − transformers'| over all logits for the same ids (B, T)."""
    ours, _ = model(idx)                    # (B, T, V)
    theirs = hf_model(input_ids=idx).logits  # (B, T, V)
    return (ours.float() - theirs.float()).abs().max().item()


@torch.no_grad()
def same_greedy_tokens(model: GPT, hf_model, prompt, max_new_tokens: int) -> bool:
    """Do our greedy generate and transformers' give the same new ids for prompt (1, T)? Both stop at the
    eos id the export wrote (if any), and both keep that eos as the last token."""
    eos = hf_model.generation_config.eos_token_id
    ours = model.generate(prompt, max_new_tokens=max_new_tokens, temperature=0, eos_id=eos)  # (1, n)
    theirs = hf_model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)[:, prompt.shape[1]:]
    return torch.equal(ours, theirs)


def main():
    from common.cli import course_parser
    p = course_parser("Export a course GPT checkpoint as a Hugging Face LlamaForCausalLM folder.",
                      "seed", "init", "out", out=str(RUNS_DIR / "hf_llama"))
    p.add_argument("--check", action="store_true", help="校验 load it with transformers and compare logits + greedy text")
    args = p.parse_args()
    args.init = args.init or newest_gpt_checkpoint()
    out = export_checkpoint(args.init, args.out)
    print(f"exported {args.init} → {out} ({', '.join(sorted(f.name for f in out.iterdir()))})")
    if args.check:
        model, _, _ = load_gpt(args.init, expect_steps=GPT_STEPS)
        hf = load_hf(out)
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randint(0, model.config.vocab_size, (2, min(64, model.config.block_size)), generator=g)
        diff = compare_logits(model, hf, idx)
        n = min(32, model.config.block_size - 8)
        same = same_greedy_tokens(model, hf, idx[:1, :8], n)
        print(f"max |logits diff| = {diff:.2e}; greedy generation identical: {same}")
        if diff > 1e-4 or not same:
            raise CourseError("the exported model does not match ours")


if __name__ == "__main__":
    from common.cli import run
    run(main)
