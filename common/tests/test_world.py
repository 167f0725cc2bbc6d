"""The data world: deterministic per seed, different across seeds, a disjoint split, the words step 6 uses."""
import random

from common import world


def test_same_seed_same_corpus():
    assert world.generate_docs(50_000, seed=7) == world.generate_docs(50_000, seed=7)


def test_different_seed_different_corpus():
    a, b = world.generate_docs(50_000, seed=7), world.generate_docs(50_000, seed=8)
    assert a != b
    assert len(set(a) & set(b)) < 0.5 * len(set(a))  # mostly different documents, not a shifted copy


def test_size_flag_controls_size():
    docs = world.generate_docs(200_000, seed=1)
    n_bytes = sum(len(d.encode("utf-8")) + 1 for d in docs)
    assert 200_000 <= n_bytes < 200_000 + 2_000


def test_train_val_disjoint_and_nonempty():
    train, val = world.build_corpus(size_mb=0.5, seed=3)
    assert val and train
    assert not set(train) & set(val)
    assert 0.005 < len(val) / (len(train) + len(val)) < 0.05


def test_documents_are_single_lines_in_both_languages():
    docs = world.generate_docs(100_000, seed=11)
    assert all("\n" not in d for d in docs)
    stats = world.corpus_stats(docs)
    assert 0.3 < stats["zh_share_of_documents"] < 0.7


def test_corpus_is_not_memorisable():
    # A tiny model must not be able to memorise one epoch: most documents are distinct.
    docs = world.generate_docs(500_000, seed=5)
    assert len(set(docs)) / len(docs) > 0.8


def test_story_arithmetic_is_right():
    rng = random.Random(0)
    import re
    for _ in range(300):
        d = world.doc_story(rng, "en")
        m = re.match(r"(\w+) has (\d+) \w+\. (?:She|He) (?:eats|gives away|loses) (\d+)\. Now (?:she|he) has (\d+)", d)
        if m:
            assert int(m[2]) - int(m[3]) == int(m[4]), d


def test_scene_caption_uses_world_words():
    rng = random.Random(1)
    things = world.random_scene(rng, min_things=3, max_things=3)
    assert len({(t.row, t.col) for t in things}) == 3  # one thing per grid cell
    zh, en = world.describe_scene(things, "zh"), world.describe_scene(things, "en")
    assert zh.startswith("图中有3个图形") and en.startswith("There are 3 shapes")
    for t in things:
        assert t.color.zh in zh and t.shape[0] in zh and t.position[0] in zh
        assert t.color.en in en and t.shape[1] in en and t.position[1] in en


def test_corpus_files_are_written_once(tmp_path):
    train_path, val_path = world.corpus_files(size_mb=0.05, seed=2, out_dir=tmp_path)
    first = train_path.read_text(encoding="utf-8")
    mtime = train_path.stat().st_mtime_ns
    again, _ = world.corpus_files(size_mb=0.05, seed=2, out_dir=tmp_path)
    assert again.read_text(encoding="utf-8") == first and again.stat().st_mtime_ns == mtime
    assert val_path.read_text(encoding="utf-8").strip()
