"""One small tokenizer per test session: training it takes about a second."""
import pytest

from common.world import build_corpus
from step1_tokenizer.model import train_bpe


@pytest.fixture(scope="session")
def world_small():
    return build_corpus(0.3, seed=7)  # (train_docs, val_docs)


@pytest.fixture(scope="session")
def tok(world_small):
    return train_bpe(world_small[0], 896)
