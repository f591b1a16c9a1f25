"""When each CPU algorithm is used: one policy object, thresholds measured on XLA:CPU per
layer shape against XLA's own convolution (docs/cpu-kernels.md)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class CpuPolicy:
    # Stride-1 convs with at most this many input channels: broadcast products when not
    # differentiated (at stride 2, e.g. ResNet's 7x7 stem, XLA's convolution is faster).
    stem_channels: int = 4
    # Convs with at most this many output channels (and no Winograd): XLA's convolution and
    # its own gradients; above it, the kernel gradient as one GEMM per tap.
    native_output_channels: int = 16
    # 3x3 stride-1 convs with at least this many input channels and this many multiply-adds:
    # Winograd F(2x2, 3x3) for the forward and the kernel gradient...
    winograd_channels: int = 16
    winograd_min_macs: int = 2**24
    # ... its input gradient too from this many input channels (smaller convs lose in a step)
    winograd_input_grad_channels: int = 256
    # ... and when not differentiated only from this many multiply-adds (below, its many
    # small ops lose to XLA's conv inside a whole network's forward).
    winograd_inference_min_macs: int = 2**29


POLICY = CpuPolicy()
