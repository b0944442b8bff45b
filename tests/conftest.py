import pytest
import torch


@pytest.fixture
def one_thread():
    """Small tensors: one intra-op thread (on a loaded machine a thread pool costs far more than a small
    conv); the modules that use it say `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, with 0/0 = 0."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.norm()
    if scale == 0:
        return float((a - b).norm())
    return float((a - b).norm() / scale)
