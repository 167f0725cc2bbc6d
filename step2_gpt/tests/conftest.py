"""Step-2 test setup: the test models are tiny, so one CPU thread is fastest (and on a shared 2-core
machine, two threads that wait for each other can be 100× slower)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
