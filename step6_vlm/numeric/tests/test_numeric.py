"""Numeric tokens: the processor, the numeric embedding and head, the mixed loss, large values, bad input, the
Hugging Face wrapper, and a short seeded run whose MAE lands in a golden band."""
import json
import subprocess
import sys

import pytest
import torch

from common import REPO_ROOT
from common.errors import CourseError
from step1_tokenizer.model import course_tokenizer
from step6_vlm.numeric.model import NumericVLM, numeric_batch, numeric_example, scale, unscale
from step6_vlm.numeric.processor import as_digits, decode_numeric, numbers_in, render_numeric, split_numbers


@pytest.fixture(scope="module")
def tok():
    return course_tokenizer(fallback=True, say=lambda *a: None)


def tiny_model(tok, n_embd=32, seed=0):
    from step2_gpt.model import GPT, GPTConfig
    from step6_vlm.model import VLM, VLMConfig
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=2, n_embd=n_embd))
    return NumericVLM(VLM(gpt, VLMConfig("none", 16, 9, 63, tok.image_id)), tok.num_id, embed_dim=32)


MSGS = [{"role": "user", "content": "红色柱子的数值是多少？\n<image>"},
        {"role": "assistant", "content": "红色柱子是<num><12.5>，蓝色是<num><-3.25>。"}]


def test_processor_round_trip(tok):
    ids, mask, values = render_numeric(tok, MSGS)
    assert ids.count(tok.num_id) == 2 and [v for v in values if v] == [12.5, -3.25]
    assert all(v == 0 for i, v in zip(ids, values) if i != tok.num_id)
    text = decode_numeric(tok, ids, values, decimals=None, skip_special=False)
    assert MSGS[1]["content"] in text and "<image>" in text
    plain, _ = tok.render_conversation([dict(m, content=m["content"].replace("<num><12.5>", "").replace("<num><-3.25>", ""))
                                        for m in MSGS])
    assert len(plain) == len(ids) - 2          # the same template, two <num> ids more
    assert as_digits(MSGS[1]["content"], None) == "红色柱子是12.5，蓝色是-3.25。"
    assert numbers_in(MSGS[1]["content"]) == numbers_in(as_digits(MSGS[1]["content"], None)) == [12.5, -3.25]


@pytest.mark.parametrize("bad", ["<num><12.3.4>", "<num><>", "<num><nan>", "<num><inf>", "<num><1e999>", "x <num> y",
                                 "<num><abc>"])
def test_malformed_numbers_are_one_clear_error(bad):
    with pytest.raises(CourseError, match="number|<num>") as e:
        split_numbers(bad)
    assert "\n" not in str(e.value)


def test_numeric_embedding_gets_gradients_only_from_num_positions(tok):
    m = tiny_model(tok)
    torch.nn.init.normal_(m.num_embed[2].weight)   # not the zero start, so gradients flow back to the values
    ids, labels, values = numeric_example(m, tok, MSGS)
    x, y, xv, yv, _ = numeric_batch([(0, ids, labels, values)], tok.pad_id)
    xv.requires_grad_(True)
    out = m(x, xv, y, yv, image_features=torch.randn(1, 9, 16))
    out["loss"].backward()
    g = xv.grad[0]
    is_num = x[0] == tok.num_id
    assert (g[is_num] != 0).all() and (g[~is_num] == 0).all()
    m.zero_grad()                                  # a sequence without <num>: the numeric embedding learns nothing
    x2 = x.clone()
    x2[x2 == tok.num_id] = tok.pad_id
    m(x2, torch.full(x2.shape, 7.0), y, yv, image_features=torch.randn(1, 9, 16))["token_loss"].backward()
    assert all(p.grad is None or (p.grad == 0).all() for p in m.num_embed.parameters())


def test_mse_only_where_the_target_is_num_and_mixed_loss(tok):
    m = tiny_model(tok)
    m.set_value_stats([10.0, 20.0, 40.0])
    ids, labels, values = numeric_example(m, tok, MSGS)
    x, y, xv, yv, _ = numeric_batch([(0, ids, labels, values)], tok.pad_id)
    feats = torch.randn(1, 9, 16)
    alpha = 0.5
    out = m(x, xv, y, yv, image_features=feats, alpha=alpha)
    where = y == tok.num_id
    assert int(where.sum()) == 2
    mse = ((out["num_pred"][where] - m.standard(yv[where])) ** 2).mean()
    ce = torch.nn.functional.cross_entropy(out["logits"][0], y[0], ignore_index=-100)
    assert torch.allclose(out["num_loss"], mse) and torch.allclose(out["token_loss"], ce)
    assert torch.allclose(out["loss"], ce + alpha * mse)
    yv2 = yv.clone()
    yv2[~where] = 1e3                               # values elsewhere never enter the MSE
    assert torch.allclose(m(x, xv, y, yv2, image_features=feats)["num_loss"], out["num_loss"])
    yv2[where] += 1.0
    assert not torch.allclose(m(x, xv, y, yv2, image_features=feats)["num_loss"], out["num_loss"])


def test_values_up_to_1e6_stay_finite(tok):
    m = tiny_model(tok)
    torch.nn.init.normal_(m.num_embed[2].weight)
    big = [{"role": "user", "content": "多少？\n<image>"}, {"role": "assistant", "content": "<num><1000000>和<num><-1e6>"}]
    ids, labels, values = numeric_example(m, tok, big)
    x, y, xv, yv, _ = numeric_batch([(0, ids, labels, values)], tok.pad_id)
    out = m(x, xv, y, yv, image_features=torch.randn(1, 9, 16))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert abs(float(unscale(scale(torch.tensor(1e6)))) - 1e6) < 1.0
    assert torch.isfinite(unscale(torch.tensor([1e9, -1e9]))).all()


def test_generate_returns_ids_and_the_heads_values(tok):
    m = tiny_model(tok).eval()
    head = torch.nn.Linear(32, tok.vocab_size)      # an output layer that always says <num>
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[tok.num_id] = 10.0
    m.vlm.llm.lm_head = head
    prompt = m.vlm.expand(render_numeric(tok, MSGS[:1], add_generation_prompt=True)[0])[0]
    (ids, vals), = m.generate([prompt], torch.randn(1, 9, 16), max_new_tokens=3)
    assert ids == [tok.num_id] * 3 and all(v != 0 for v in vals)


def test_bad_data_and_checkpoints(tmp_path, tok):
    from common.checkpoint import save_checkpoint
    from step6_vlm.numeric.data import load_samples
    from step6_vlm.numeric.model import load_numeric
    f = tmp_path / "data.json"
    f.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "<image>\nq"}]}]))
    with pytest.raises(CourseError, match=r"data.json\[0\] \(id 'a'\): missing image"):
        load_samples(f)
    f.write_text(json.dumps([{"id": "a", "image": "none.png", "conversations": [{"from": "human", "value": "<image>\nq"}]}]))
    with pytest.raises(CourseError, match="does not exist"):
        load_samples(f)
    save_checkpoint(tmp_path / "ck", state_dict={"w": torch.zeros(1)}, step="vlm_numeric", model_config={"vlm": {}})
    with pytest.raises(CourseError, match="no numeric layers"):
        load_numeric(tmp_path / "ck")


def test_scripts_fail_with_one_line(one_line_error, tmp_path):
    for script, argv, words in [("train.py", ["--init", str(tmp_path / "none")], "no step-6 VLM"),
                                ("eval.py", ["--num", str(tmp_path / "a"), "--digits", str(tmp_path / "b")], "no checkpoint"),
                                ("demo.py", ["--checkpoint", str(tmp_path / "a"), "--image", "x.png"], "no checkpoint")]:
        r = subprocess.run([sys.executable, str(REPO_ROOT / "step6_vlm/numeric" / script), *argv],
                           capture_output=True, text=True, timeout=300)
        one_line_error(r, words, script)


def test_hf_wrapper_forward_backward_save_load_generate(tmp_path, tok):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer as HFTokenizer
    from step6_vlm.numeric.hf_numeric_qwen2_5_vl import (NumericQwen2_5_VLForConditionalGeneration,
                                                          NumericQwen2_5_VLProcessor, tiny_config)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(json.dumps(tok.to_hf_dict())),
                                     pad_token="<|pad|>")
    proc = NumericQwen2_5_VLProcessor(hf_tok)
    enc = proc(["长<num><12.5>米", "<num><-2>和<num><1e6>"])
    assert enc["numeric_values"][enc["input_ids"] == tok.num_id].tolist() == [12.5, -2.0, 1e6]
    assert proc.decode(enc["input_ids"][0], enc["numeric_values"][0]).startswith("长<num><12.5>米")
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=tok.vocab_size, numeric_token_id=tok.num_id)
    cfg.image_token_id = tok.image_id
    model = NumericQwen2_5_VLForConditionalGeneration(cfg)
    assert (model.numeric_embedding[2].weight == 0).all()
    pv, thw = torch.randn(4, 3 * 2 * 14 * 14), torch.tensor([[1, 2, 2]])       # one 28×28 image → 1 image token
    ids = torch.tensor([[tok.im_start_id, tok.image_id, 10, 11, tok.num_id, 12, tok.im_end_id]])
    vals = torch.zeros(ids.shape)
    vals[0, 4] = 1e6
    out = model(input_ids=ids, numeric_values=vals, labels=ids, pixel_values=pv, image_grid_thw=thw)
    assert out.logits.shape == (1, 7, tok.vocab_size) and out.numeric_predictions.shape == (1, 7)
    assert torch.allclose(out.loss, out.token_loss + cfg.numeric_loss_weight * out.numeric_loss)
    out.loss.backward()
    assert model.regression_head.weight.grad.abs().sum() > 0 and torch.isfinite(out.loss)
    model.eval()
    model.save_pretrained(tmp_path / "hf")
    back = NumericQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert type(back.config).__name__ == "NumericQwen2_5_VLConfig" and back.config.numeric_token_id == tok.num_id
    with torch.no_grad():
        a = model(input_ids=ids, numeric_values=vals, pixel_values=pv, image_grid_thw=thw)
        b = back(input_ids=ids, numeric_values=vals, pixel_values=pv, image_grid_thw=thw)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.allclose(a.numeric_predictions, b.numeric_predictions)
    new, new_vals = back.generate_with_numbers(ids[:, :4], max_new_tokens=3, pixel_values=pv, image_grid_thw=thw)
    assert new.shape == new_vals.shape == (1, 3)


@pytest.mark.slow
def test_short_seeded_run_lands_in_golden_mae_band(tok):
    """200 steps on a tiny model where the picture's features carry the value: the head learns to read it."""
    from step6_vlm.numeric.scoring import answers, score
    m = tiny_model(tok, n_embd=48)
    g = torch.Generator().manual_seed(0)
    vals = (torch.rand(256, generator=g) * 60 + 20).round(decimals=1)               # in range [20, 80]
    feats = torch.randn(256, 9, 16, generator=g) * 0.1
    feats[:, :, 0] = (vals[:, None] - 50) / 20                                     # the value, readable
    samples = [{"image_index": i, "type": "v", "messages": [{"role": "user", "content": "数值？\n<image>"},
                {"role": "assistant", "content": f"是<num><{float(v):.1f}>。"}]} for i, v in enumerate(vals)]
    ex = [(s["image_index"], *numeric_example(m, tok, s["messages"])) for s in samples]
    m.set_value_stats(vals[:224])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(200):
        batch = [ex[j] for j in torch.randint(0, 224, (32,), generator=g)]
        x, y, xv, yv, idx = numeric_batch(batch, tok.pad_id)
        loss = m(x, xv, y, yv, image_features=feats[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = score(answers(m, tok, samples[224:], feats), samples[224:])
    assert 0.05 < s["mae"] < 0.6 and s["relaxed"] >= 0.9, s   # golden band around this seeded run's MAE (README)
