"""Issue 7's checks: the evaluator on hand-made predictions (with hallucination counting), the debug tool's
figures on a tiny model, and that every ablation switch changes the model the way the lesson claims."""
import sys

import pytest
import torch

from common.errors import CourseError
from common.world import COLORS, SHAPES, SIZES, Thing
from step6_vlm.ablate import VARIANTS, build_variant, run_variant
from step6_vlm.train import fit
from step6_vlm.debug import (asked_cell_attention, debug_batch, examples_for, last_query_attention,
                             loss_mask_lines, with_image_loss)
from step6_vlm.eval import accuracy_by_type, check_answer, generate_answers, hallucination_stats, mentions, write_eval_md
from step6_vlm.loop import caption_items, collate
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
             {"type": "position", "answer": "top left"}, {"type": "describe", "answer": "There are 2 shapes."}]
    preds = ["红色", "red", " star ", "3个", "top left", "There are 2 shapes."]
    acc = accuracy_by_type(items, preds)
    assert acc["by_type"] == {"color": 0.5, "shape": 1.0, "count": 0.0, "position": 1.0, "describe": 1.0}
    assert acc["vqa_accuracy"] == 0.6          # 3 of the 5 short answers; descriptions are reported apart
    with pytest.raises(CourseError):
        accuracy_by_type(items, preds[:-1])


def test_mentions_prefer_longest_forms():
    assert mentions("a star at the top left, not a start") == [("shape", "star"), ("position", (0, 0))]
    assert mentions("左上是一个红色圆形，下方是星形") == [("position", (0, 0)), ("color", "red"), ("shape", "circle"),
                                                       ("position", (2, 1)), ("shape", "star")]
    assert ("count", 3) in mentions("There are 3 shapes") and ("count", 1) in mentions("There is 1 shape")
    assert ("count", 4) in mentions("图中有4个图形：")


def test_hallucination_counting():
    truth_zh = "图中有2个图形：左上是一个大的红色圆形，中间是一个大的蓝色星形。"
    ok = check_answer(truth_zh, SCENE)
    assert ok["mentions"] == 7 and ok["hallucinated"] == [] and ok["objects"] == 2 and ok["wrong_objects"] == 0
    # made up: a 3rd shape, a green colour, a square, the bottom-right cell; the blue star put at the top left
    bad = "There are 3 shapes: a green square at the bottom right and a blue star at the top left."
    r = check_answer(bad, SCENE)
    assert sorted(r["hallucinated"], key=str) == sorted([("count", 3), ("color", "green"), ("shape", "square"),
                                                         ("position", (2, 2))], key=str)
    assert r["mentions"] == 7 and r["objects"] == 2 and r["wrong_objects"] == 2
    assert check_answer("粉色的圆形", SCENE)["hallucinated"] == [("color", "pink")]  # a word the pictures never use
    st = hallucination_stats([truth_zh, bad], [SCENE, SCENE])
    assert st["mentions"] == 14 and st["hallucinated"] == 4 and st["hallucination_rate"] == round(4 / 14, 4)
    assert st["answers_with_hallucination"] == 0.5 and st["object_error_rate"] == 0.5
    assert st["hallucinated_by_kind"] == {"count": 1, "color": 1, "shape": 1, "position": 1}


def test_generation_and_table(tok, tmp_path):
    torch.manual_seed(0)
    vlm = make_vlm(tok).eval()
    feats = torch.randn(2, 9, 32)                                        # (N, P, D)
    qs = [(0, "描述这张图片"), (1, "Describe this image."), (1, "描述这张图片")]   # the model places <image> itself
    out = generate_answers(vlm, tok, qs, feats, max_new_tokens=5)
    assert len(out) == 3 and all(isinstance(a, str) for a in out)
    res = {"pretrain": {"descriptions": ["short", "x", "y"]}, "sft": {"descriptions": ["long | text", "z", "w"]}}
    md = write_eval_md(tmp_path, [SCENE, SCENE], qs, res, n_rows=2, header="# t")
    text = md.read_text()
    assert text.count("<img src=") == 2 and (tmp_path / "images" / "000.png").is_file()
    assert "long / text" in text and "Pretrain_vlm 阶段1 输出" in text and "左上是一个大的红色圆形" in text


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


# ---------------------------------------------------------------------------------------------- ablation switches

def test_image_token_switches_change_what_the_llm_sees(tok):
    from step2_gpt.model import GPT, GPTConfig
    base = make_vlm(tok)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=2, n_embd=64))
    first = build_variant(gpt, base.config, VARIANTS["first"][2])
    mean = build_variant(gpt, base.config, VARIANTS["mean"][2])
    allp = build_variant(gpt, base.config, VARIANTS["baseline"][2])
    f = torch.randn(2, 9, 32)
    g = f.clone()
    g[:, 1:] = torch.randn(2, 8, 32)                                     # change every patch but the first
    assert first.image_embeds(f).shape == (2, 1, 64) and torch.equal(first.image_embeds(f), first.image_embeds(g))
    perm = f[:, torch.randperm(9)]                                        # move the patches around the grid
    assert mean.image_embeds(f).shape == (2, 1, 64)
    assert torch.allclose(mean.image_embeds(f), mean.image_embeds(perm), atol=1e-5)   # position is lost
    assert not torch.allclose(mean.image_embeds(f), mean.image_embeds(g))              # content is kept
    assert allp.image_embeds(f).shape == (2, 9, 64) and not torch.allclose(allp.image_embeds(f), allp.image_embeds(perm))
    assert first.llm is not gpt and first.llm is not mean.llm            # rows never share weights
    image_first = build_variant(gpt, base.config, VARIANTS["image_first"][2])
    no_pos = build_variant(gpt, base.config, VARIANTS["no_positions"][2])
    assert (allp.config.layout, image_first.config.layout) == ("question-first", "image-first")
    assert allp.image_pos is not None and no_pos.image_pos is None and no_pos.config.layout == "question-first"


def test_mlp_and_image_loss_switches(tok):
    base = make_vlm(tok)
    mlp = build_variant(base.llm, base.config, VARIANTS["mlp"][2])
    assert isinstance(mlp.projection, torch.nn.Sequential) and any(isinstance(m, torch.nn.GELU) for m in mlp.projection)
    assert isinstance(base.projection, torch.nn.Linear) and base.projection.bias is None
    ex = _batch(tok, base, 2)
    ex2 = with_image_loss(ex, tok.image_id)
    for (_, ids, lab), (_, ids2, lab2) in zip(ex, ex2):
        assert ids == ids2
        assert all(l2 == tok.image_id for t, l2 in zip(ids, lab2) if t == tok.image_id)
        assert all(l1 == l2 for t, l1, l2 in zip(ids, lab, lab2) if t != tok.image_id)


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


def test_one_stage_row_skips_stage_one(tok):
    from step6_vlm.data import eval_items, world_splits
    torch.manual_seed(0)
    base = make_vlm(tok)
    sp = world_splits(6, 2, 0, seed=1)
    items = [dict(it, image=it["image"] + 6) for it in eval_items(sp.test, 1)]
    plan = {s: dict(steps=1, batch=2, lr=1e-3, proj_lr=1e-3) for s in ("pretrain", "sft")}
    ctx = {"tok": tok, "gpt": base.llm, "cfg": base.config, "feats": torch.randn(8, 9, 32), "device": "cpu", "splits": sp,
           "plan": plan, "seed": 0, "painted": [], "items": [i for i in items if i["type"] != "describe"],
           "describe": [i for i in items if i["type"] == "describe"], "combo": [],
           "captions": [dict(it, image=it["image"] + 6) for it in caption_items(sp.test, 1)]}
    one, two = run_variant("one_stage", ctx), run_variant("baseline", ctx)
    assert "pretrain_final_loss" not in one and "caption_accuracy" not in one and "sft_final_loss" in one
    assert "pretrain_final_loss" in two and "caption_accuracy" in two
    assert set(two["by_type"]) == {"color", "shape", "count", "position", "describe"}


def test_probe_ceiling_sees_what_each_mode_passes_on():
    from step6_vlm.ablate import probe_ceiling
    from step6_vlm.data import world_splits
    scenes = world_splits(300, 0, 0, seed=2).train
    feats = torch.zeros(len(scenes), 9, 16)                              # (N, P, D): each patch = its cell's content
    for n, sc in enumerate(scenes):
        for t in sc:
            feats[n, 3 * t.row + t.col, [c.en for c in COLORS].index(t.color.en)] = 1.0
            feats[n, 3 * t.row + t.col, 8 + [s[1] for s in SHAPES].index(t.shape[1])] = 1.0
    full, first, mean = (probe_ceiling(feats, scenes, 250, m, ridge=1e-3) for m in ("all", "first", "mean"))
    assert full["color"] == full["shape"] == full["position"] == 1.0   # every cell readable
    assert first["color"] < 0.5 and mean["position"] < 0.5               # one cell / no positions


def test_lookup_batches_ask_an_occupied_cell_and_answer_its_colour():
    from step6_vlm.lookup import CELLS, COLORS, make_batch
    g = torch.Generator().manual_seed(0)
    feats, text, answer = make_batch(g, 64, filler=3, tail=2)
    assert feats.shape == (64, CELLS, CELLS + COLORS + 1) and text.shape == (64, 3 + 1 + 2)
    asked = text[:, 3]                                                   # the cell word: ids 0–8
    rows = torch.arange(64)
    assert bool(feats[rows, asked, -1].all())                            # the asked cell holds a shape
    assert torch.equal(feats[rows, asked, CELLS:CELLS + COLORS].argmax(-1) + 10, answer)   # its colour is the answer
    assert torch.equal(feats[:, :, :CELLS], torch.eye(CELLS).expand(64, -1, -1))           # each token knows its cell
    assert bool((text[:, -2:] == torch.tensor([40, 41])).all())          # the fixed tail


def test_lookup_question_first_puts_the_picture_between_question_and_tail():
    from step6_vlm.lookup import arrange
    words, image = torch.zeros(2, 4 + 1 + 3, 8), torch.ones(2, 9, 8)     # filler 4, cell word, tail 3
    words[:, :, 0] = torch.arange(8.0)                                   # mark each word by its place
    first, last = arrange(words, image, filler=4, question_first=True), arrange(words, image, 4, False)
    assert first.shape == last.shape == (2, 17, 8)
    assert bool((last[:, :9] == 1).all()) and torch.equal(last[:, 9:], words)               # picture, then text
    assert torch.equal(first[:, :5], words[:, :5]) and bool((first[:, 5:14] == 1).all())    # question, picture,
    assert torch.equal(first[:, 14:], words[:, 5:])                                          # then the tail


def test_oracle_features_hold_each_cells_facts():
    from step6_vlm.loop import oracle_features
    t = Thing(COLORS[2], SHAPES[4], SIZES[1], row=1, col=2)
    f = oracle_features([[t]], 32)                                           # (1, 9, 32)
    assert f.shape == (1, 9, 32) and torch.equal(f[0, :, :9], torch.eye(9))
    k = 1 * 3 + 2
    on = set(torch.nonzero(f[0, k, 9:]).flatten().tolist())
    assert on == {2, len(COLORS) + 4, len(COLORS) + len(SHAPES) + 1, len(COLORS) + len(SHAPES) + len(SIZES)}
    assert f[0, [j for j in range(9) if j != k], 9:].sum() == 0              # empty cells say only where they are
    with pytest.raises(CourseError):
        oracle_features([[t]], 16)


def test_probe_tells_entangled_features_on_never_trained_combinations():
    from step6_vlm.data import world_splits
    from step6_vlm.train_clip import linear_probe
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
