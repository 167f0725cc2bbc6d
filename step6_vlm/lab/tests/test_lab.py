"""The lab's tools: every ablation switch changes the model the way the experiment log claims, the probe ceiling
sees what each image-token mode passes on, and the lookup experiment builds the batches it describes."""
from dataclasses import replace

import pytest
import torch

from common.errors import CourseError
from common.world import COLORS, SHAPES, SIZES, Thing
from step6_vlm.debug import examples_for
from step6_vlm.pitfalls import with_image_loss
from step6_vlm.lab.ablate import VARIANTS, build_variant, run_variant
from step6_vlm.tests.conftest import make_vlm


def _batch(tok, vlm, n=4, stage="pretrain"):
    from step6_vlm.data import world_splits
    scenes = world_splits(n, 0, 0, seed=3).train
    return examples_for(vlm, tok, scenes, stage, 0, n)


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



def test_one_stage_row_skips_stage_one(tok):
    from step6_vlm.data import eval_items, world_splits
    torch.manual_seed(0)
    base = make_vlm(tok)
    sp = world_splits(6, 2, 0, seed=1)
    items = [dict(it, image=it["image"] + 6) for it in eval_items(sp.test, 1)]
    from dataclasses import replace
    from step6_vlm.recipe import RECIPE, StagePlan
    recipe = replace(RECIPE, pretrain=StagePlan(1, 2, 1e-3, 1e-3), sft=StagePlan(1, 2, 1e-3, 1e-3))
    ctx = {"tok": tok, "gpt": base.llm, "cfg": base.config, "feats": torch.randn(8, 9, 32), "device": "cpu", "splits": sp,
           "recipe": recipe, "seed": 0, "painted": [], "items": [i for i in items if i["type"] != "describe"],
           "describe": [i for i in items if i["type"] == "describe"], "combo": [],
           "describe_scenes": [sp.test[it["image"] - 6] for it in items if it["type"] == "describe"]}
    one, two = run_variant("one_stage", ctx), run_variant("baseline", ctx)
    assert "pretrain_final_loss" not in one and "pretrain_describe_f1" not in one and "sft_final_loss" in one
    assert "pretrain_final_loss" in two and "pretrain_describe_f1" in two
    assert set(two["by_type"]) == {"color", "shape", "count", "position", "describe"}


def test_probe_ceiling_sees_what_each_mode_passes_on():
    from step6_vlm.lab.ablate import probe_ceiling
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
    from step6_vlm.lab.lookup import CELLS, COLORS, make_batch
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
    from step6_vlm.lab.lookup import arrange
    words, image = torch.zeros(2, 4 + 1 + 3, 8), torch.ones(2, 9, 8)     # filler 4, cell word, tail 3
    words[:, :, 0] = torch.arange(8.0)                                   # mark each word by its place
    first, last = arrange(words, image, filler=4, question_first=True), arrange(words, image, 4, False)
    assert first.shape == last.shape == (2, 17, 8)
    assert bool((last[:, :9] == 1).all()) and torch.equal(last[:, 9:], words)               # picture, then text
    assert torch.equal(first[:, :5], words[:, :5]) and bool((first[:, 5:14] == 1).all())    # question, picture,
    assert torch.equal(first[:, 14:], words[:, 5:])                                          # then the tail


def test_oracle_features_hold_each_cells_facts():
    from step6_vlm.lab.ablate import oracle_features
    t = Thing(COLORS[2], SHAPES[4], SIZES[1], row=1, col=2)
    f = oracle_features([[t]], 32)                                           # (1, 9, 32)
    assert f.shape == (1, 9, 32) and torch.equal(f[0, :, :9], torch.eye(9))
    k = 1 * 3 + 2
    on = set(torch.nonzero(f[0, k, 9:]).flatten().tolist())
    assert on == {2, len(COLORS) + 4, len(COLORS) + len(SHAPES) + 1, len(COLORS) + len(SHAPES) + len(SIZES)}
    assert f[0, [j for j in range(9) if j != k], 9:].sum() == 0              # empty cells say only where they are
    painted = oracle_features([[replace(t, color=replace(COLORS[0], zh="", en=""))]], 32)   # an off-world paint
    assert set(torch.nonzero(painted[0, k, 9:]).flatten().tolist()) == on - {2}            # shape, size, there; no colour
    with pytest.raises(CourseError):
        oracle_features([[t]], 16)


def test_oracle_row_trains_and_scores_on_oracle_features(tok, monkeypatch):
    import types
    from step6_vlm.lab import ablate
    args = types.SimpleNamespace(quick=True, seed=0, pretrain_steps=1, sft_steps=1, batch_size=4)   # one step a stage
    ctx = ablate.setup(args, "cpu")
    sp, oracle = ctx["splits"], ctx["oracle"]
    assert oracle.shape == ctx["feats"].shape                             # the same VLMConfig reads both
    # each row holds the facts of the picture the row's index points at: training, held-out, painted
    assert torch.equal(oracle[:len(sp.train)], ablate.oracle_features(sp.train, oracle.shape[2]))
    described = [it["image"] for it in ctx["describe"]]
    assert torch.equal(oracle[described], ablate.oracle_features(ctx["describe_scenes"], oracle.shape[2]))
    rows, scenes = zip(*ctx["painted"])
    assert torch.equal(oracle[list(rows)], ablate.oracle_features(list(scenes), oracle.shape[2]))
    seen = []                                                              # the features each call reads

    def spy(fn, at):
        def wrapped(*a, **kw):
            seen.append(a[at])
            return fn(*a, **kw)
        return wrapped
    for name, at in (("fit", 3), ("score", 3), ("describe", 5)):
        monkeypatch.setattr(ablate, name, spy(getattr(ablate, name), at))
    ablate.run_variant("oracle", ctx)
    assert len(seen) == 6 and all(f is oracle for f in seen)   # 2 stages trained, stage-1 describe, VQA, combos, describe
    seen.clear()
    ablate.run_variant("baseline", ctx)
    assert len(seen) == 6 and all(f is ctx["feats"] for f in seen)
