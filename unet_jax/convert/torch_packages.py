"""segmentation_models_pytorch imported beside a torchvision built for another torch: the
importer builds smp folders with it; tests/test_smp_upstream.py checks references against it.

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
