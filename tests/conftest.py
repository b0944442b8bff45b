import torch


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, with 0/0 = 0."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.norm()
    if scale == 0:
        return float((a - b).norm())
    return float((a - b).norm() / scale)
