"""The real upstream packages the references are checked against (tests/test_smp_upstream.py).

segmentation_models_pytorch imports torchvision, whose wheel may be built for another
torch (a CUDA build beside torch+cpu): its compiled ops then fail to register and the
import stops at `torchvision::nms`. smp's U-Nets use none of torchvision's compiled ops,
so declaring the two schemas it looks up lets the import go through.
"""

import contextlib
import importlib


def _declare_torchvision_ops() -> None:
    import torch
    schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    for op in ("nms", "qnms"):
        # already declared (a second call, or torchvision's own ops loaded): keep that one
        with contextlib.suppress(RuntimeError):
            torch.library.define(f"torchvision::{op}", schema)


def import_smp():
    """`segmentation_models_pytorch`, importable beside a torchvision built for another torch.
    Raises ImportError (with the install line) when the package is missing."""
    try:
        return importlib.import_module("segmentation_models_pytorch")
    except ModuleNotFoundError as e:
        if e.name != "segmentation_models_pytorch":
            raise
        raise ModuleNotFoundError("segmentation-models-pytorch is not installed: pip install "
                                  "'segmentation-models-pytorch>=0.5,<0.7' (or .[dev])",
                                  name=e.name) from e
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    _declare_torchvision_ops()
    return importlib.import_module("segmentation_models_pytorch")


def randomize(module, seed: int = 0) -> None:
    """Weights far from any default init, so a mixed-up tensor or a dropped term shows:
    He-scaled conv weights (std sqrt(2 / fan_in)), conv biases ~ N(0, 0.5^2); BatchNorm
    weights of random sign and magnitude U(0.5, 1.5), biases ~ N(0, 0.5^2), running means
    ~ N(0, 0.5^2), running variances ~ U(0.5, 2). (Wider BatchNorm ranges make deep float32
    outputs ill-conditioned: torch's own float32 then strays from float64 by ~1e-4.)"""
    import torch
    g = torch.Generator().manual_seed(seed)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * std)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (high - low) + low)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                normal(m.weight, (2 / max(1, m.weight.shape[1:].numel())) ** 0.5)
                if m.bias is not None:
                    normal(m.bias, 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                uniform(m.weight, 0.5, 1.5)
                m.weight.mul_(torch.randint(0, 2, m.weight.shape, generator=g) * 2 - 1)
                normal(m.bias, 0.5)
                normal(m.running_mean, 0.5)
                uniform(m.running_var, 0.5, 2.0)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))
