"""Checks of the evaluation tools: the evaluator on hand-made predictions (descriptions read back into things), the debug tool's
figures on a tiny model, and that each stage-1 freeze choice trains what it claims."""
import sys

import pytest
import torch

from common.errors import CourseError
from common.world import COLORS, SHAPES, SIZES, Thing
from step6_vlm.debug import (asked_cell_attention, debug_batch, examples_for, last_query_attention,
                             loss_mask_lines)
from step6_vlm.eval import accuracy_by_type, write_eval_md
from step6_vlm.loop import collate, fit
from step6_vlm.scoring import description_scores, generate_answers
from step6_vlm.tests.conftest import make_vlm

C = {c.en: c for c in COLORS}
S = {en: (zh, en) for zh, en in SHAPES}
BIG = SIZES[0]
# a red circle at the top left and a blue star in the centre
SCENE = [Thing(C["red"], S["circle"], BIG, 0, 0), Thing(C["blue"], S["star"], BIG, 1, 1)]


# ---------------------------------------------------------------------------------------------- evaluator

def test_accuracy_by_type_on_hand_made_predictions():
    items = [{"type": "color", "answer": "红色"}, {"type": "color", "answer": "blue"},
             {"type": "shape", "answer": "star"}, {"type": "count", "answer": "2个"},
             {"type": "position", "answer": "top left"}]
    acc = accuracy_by_type(items, ["红色", "red", " star ", "3个", "top left"])
    assert acc["by_type"] == {"color": 0.5, "shape": 1.0, "count": 0.0, "position": 1.0} and acc["overall"] == 0.6
    with pytest.raises(CourseError):
        accuracy_by_type(items, ["红色"])


def test_description_is_read_back_into_things():
    """The parser inverts the world's caption in both languages, for every scene shape the world draws."""
    import random
    from common.world import describe_scene, parse_description, random_scene, scene_facts
    rng = random.Random(0)
    for _ in range(300):
        s = random_scene(rng)
        for lang in ("zh", "en"):
            assert parse_description(describe_scene(s, lang)) == (len(s), scene_facts(s))
    assert parse_description("There is at the top left.") == (None, [None])   # said something, nothing parses
    assert parse_description("") == (None, [])


def test_description_scores_on_hand_made_answers():
    truth_zh = "图中有2个图形：左上是一个大的红色圆形，中间是一个大的蓝色星形。"
    # one right thing, one wrong (the star put at the top right), one invented, one unparsable piece; count wrong
    bad = "There are 3 shapes: a big red circle at the top left, a big blue star at the top right, a small green square at the bottom and a big red blob"
    s = description_scores([truth_zh, bad, "3"], [SCENE, SCENE, SCENE])
    # said: 2 + 4 + 1 (the bare "3" is one unparsable piece); right: 2 + 1; true: 6
    assert s["precision"] == pytest.approx(3 / 7) and s["recall"] == pytest.approx(3 / 6)
    assert s["f1"] == pytest.approx(2 * (3 / 7) * 0.5 / (3 / 7 + 0.5))
    assert s["exact"] == pytest.approx(1 / 3) and s["hallucination_rate"] == pytest.approx(4 / 7)
    assert s["count_accuracy"] == pytest.approx(1 / 3)
    twice = "图中有2个图形：左上是一个大的红色圆形，左上是一个大的红色圆形。"   # a true thing said twice counts once
    assert description_scores([twice], [SCENE])["precision"] == 0.5


def test_generation_and_table(tok, tmp_path):
    torch.manual_seed(0)
    vlm = make_vlm(tok).eval()
    feats = torch.randn(2, 9, 32)                                        # (N, P, D)
    qs = [(0, "描述这张图片"), (1, "Describe this image."), (1, "描述这张图片")]   # the model places <image> itself
    out = generate_answers(vlm, tok, qs, feats, max_new_tokens=5)
    assert len(out) == 3 and all(isinstance(a, str) for a in out)
    desc = [{"image": i, "question": q, "lang": "zh" if q.startswith("描") else "en"} for i, q in qs]
    res = {st: {"descriptions": d, "describe": description_scores(d, [SCENE] * 3)}
           for st, d in (("pretrain", ["short", "x", "y"]), ("sft", ["long | text", "z", "w"]))}
    md = write_eval_md(tmp_path, [SCENE, SCENE], desc, res, n_rows=2, header="# t")
    text = md.read_text()
    assert text.count("<img src=") == 2 and (tmp_path / "images" / "000.png").is_file()
    assert "long / text" in text and "Pretrain_vlm 阶段1 输出" in text and "左上是一个大的红色圆形" in text
    assert "| **F1** | 3 张图 | 0.0% | 0.0% | |" in text and "mean length" in text


def test_eval_missing_checkpoint_names_the_command(tmp_path, monkeypatch):
    from step6_vlm import eval as ev
    monkeypatch.setattr(sys, "argv", ["eval.py", "--init", str(tmp_path / "none"), "--compare", ""])
    with pytest.raises(CourseError, match="python step6_vlm/train.py"):
        ev.main()


# ---------------------------------------------------------------------------------------------- debug tool

def _batch(tok, vlm, n=4, stage="pretrain"):
    from step6_vlm.data import world_splits
    scenes = world_splits(n, 0, 0, seed=3).train
    return examples_for(vlm, tok, scenes, stage, 0, n)


@pytest.mark.parametrize("mode,per_image", [("all", 9), ("first", 1), ("mean", 1)])
def test_debug_figures_on_tiny_model(tok, mode, per_image):
    torch.manual_seed(0)
    vlm = make_vlm(tok, image_tokens=mode)
    ex = _batch(tok, vlm)
    fig = debug_batch(vlm, tok, ex, torch.randn(4, 9, 32), stage="pretrain", stage1_llm="frozen")
    assert fig["placeholders"] == fig["features_used"] == 4 * per_image
    assert fig["features_available"] == 4 * 9
    assert fig["image_tokens_per_image"] == per_image
    (start, end), = fig["image_positions_seq0"]
    assert end - start == per_image and ex[0][1][start:end] == [tok.image_id] * per_image
    assert fig["projection_grad_norm"] > 0 and fig["projection_update_norm"] > 0   # answer loss alone reaches it
    assert fig["loss_positions_on_image"] == 0 and fig["trainable"]["llm"] == 0
    assert fig["feature_norm"] > 0 and fig["projected_norm"] > 0 and fig["text_embedding_norm"] > 0


def test_debug_sft_batch_skips_pictures_without_a_single_answer(tok):
    """Two red circles alike: "where is the red circle?" has no single answer, so that picture gives no
    sequence; the batch still holds n sequences, from the next pictures (with seed 0: the 3rd, 4th, 7th)."""
    twins = [Thing(C["red"], S["circle"], BIG, 0, 0), Thing(C["red"], S["circle"], BIG, 2, 2)]
    vlm = make_vlm(tok)
    ex = examples_for(vlm, tok, [twins] * 12, "sft", 0, 8)
    assert len(ex) == 8 and [i for i, _, _ in ex] == [0, 1, 4, 5, 7, 8, 9, 10]
    assert all(ids.count(tok.image_id) == 9 for _, ids, _ in ex)


def test_loss_mask_is_printed_token_by_token(tok):
    vlm = make_vlm(tok)
    ex = _batch(tok, vlm, 1)
    x, y, _ = collate(ex, tok.pad_id)
    lines = loss_mask_lines(tok, x[0], y[0], tok.image_id)
    assert any("<image> ×9" in ln for ln in lines)
    n_loss = sum(ln.rstrip().endswith("✓") for ln in lines)
    assert n_loss == int((y[0] != -100).sum()) > 0                       # one ✓ per position in the loss
    assert len(lines) == 1 + (x.shape[1] - 8)                            # header + tokens, the image block on one line


@pytest.mark.parametrize("qk_norm,n_kv_head", [(False, 4), (True, 2)])
def test_written_out_attention_matches_the_model(qk_norm, n_kv_head):
    """Check 6 recomputes attention probabilities by hand; they must give the module's own output."""
    from step2_gpt.model import GPT, GPTConfig
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=4, n_kv_head=n_kv_head, n_embd=32, qk_norm=qk_norm))
    attn, h = gpt.blocks[0].attn, torch.randn(1, 11, 32)
    cos, sin = gpt.rope_cos[:11], gpt.rope_sin[:11]
    p = last_query_attention(attn, h, cos, sin)                                   # (H, T)
    assert p.shape == (4, 11) and torch.allclose(p.sum(-1), torch.ones(4))
    v = attn.qkv(h)[..., -n_kv_head * attn.hd:].view(11, n_kv_head, attn.hd).transpose(0, 1)   # (Hkv, T, hd)
    v = v.repeat_interleave(4 // n_kv_head, dim=0)                                # (H, T, hd)
    by_hand = attn.proj((p[:, None] @ v).reshape(1, -1))                          # (1, C)
    assert torch.allclose(by_hand, attn(h, cos, sin)[0, -1:], atol=1e-5)


def test_asked_cell_attention_figures(tok):
    from step6_vlm.data import world_splits
    torch.manual_seed(0)
    vlm = make_vlm(tok)
    scenes = world_splits(6, 0, 0, seed=2).train
    look = asked_cell_attention(vlm, tok, scenes, torch.randn(6, 9, 32))
    assert look["questions"] == 6 and look["chance_share_of_image"] == round(1 / 9, 4)
    assert len(look["per_layer"]) == 2
    for r in look["per_layer"]:
        assert 0 <= r["on_cell"] <= r["on_image"] <= 1 and 0 <= r["share_of_image"] <= 1
    from step6_vlm.data import unique_things
    named = asked_cell_attention(vlm, tok, scenes, torch.randn(6, 9, 32), by="content")
    want = sum(1 for s in scenes if len(s) >= 2 and unique_things(s))
    assert want > 0 and named["questions"] == want and named["by"] == "content"
    for r in named["per_layer"]:
        assert 0 <= r["on_each_other_thing"] <= 1 and r["on_cell"] + r["on_each_other_thing"] <= r["on_image"] + 1e-6


@pytest.mark.parametrize("setting,changed_blocks", [("frozen", set()), ("last_n", {1, 2}), ("all", {0, 1, 2})])
def test_stage1_freeze_choices_train_what_they_claim(tok, setting, changed_blocks):
    torch.manual_seed(0)
    vlm = make_vlm(tok, n_layer=3)
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    ex = _batch(tok, vlm)
    r = fit(vlm, tok, [(ex, 1.0)], torch.randn(4, 9, 32), "pretrain", steps=2, batch=4, lr=1e-2, proj_lr=1e-2,
            stage1_llm=setting, last_n=2, seed=0, device="cpu")
    assert r["proj_grad0"] > 0
    moved = {n for n, p in vlm.named_parameters() if not torch.equal(p, before[n])}
    assert {n for n in moved if not n.startswith("llm.")} == {"projection.weight", "image_pos"}
    assert {int(n.split(".")[2]) for n in moved if n.startswith("llm.blocks.")} == changed_blocks
    assert ("llm.tok_embeddings.weight" in moved) == (setting == "all")


def test_probe_tells_entangled_features_on_never_trained_combinations():
    from step6_vlm.data import world_splits
    from step6_vlm.small_clip import linear_probe
    sp = world_splits(300, 60, 60, seed=2)

    def feats(scenes, entangled):  # (N, 9, D): colour and shape apart, or one unit per colour+shape pair
        f = torch.zeros(len(scenes), 9, 64)
        for n, sc in enumerate(scenes):
            for t in sc:
                c, s = COLORS.index(t.color), [x[1] for x in SHAPES].index(t.shape[1])
                f[n, 3 * t.row + t.col, [c * 6 + s] if entangled else [c, 8 + s]] = 1.0
                f[n, 3 * t.row + t.col, 63] = 1.0                     # occupied
        return f

    apart, tied = (linear_probe(feats(sp.train, e), sp.train, feats(sp.test, e), sp.test, feats(sp.combo, e), sp.combo)
                   for e in (False, True))
    assert apart["shape"] == tied["shape"] == 1.0                      # the same on held-out pictures
    assert apart["shape_novel"] == apart["color_novel"] == 1.0
    assert tied["shape_novel"] < 0.5                                   # a never-trained pair's unit was never read
