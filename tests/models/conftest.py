import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Model tests run torch on one thread: these small ops gain little from two, and two
    OpenMP threads next to other processes on a 2-core machine can run 40-50x slower
    (workers spin-waiting on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
