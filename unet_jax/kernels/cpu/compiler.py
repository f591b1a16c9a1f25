"""XLA:CPU compiler options for eval-mode forward passes and parameter initialisation.

XLA:CPU hands dots, convolutions and reductions to YNNPACK by default. For eval-mode forward
passes keeping them in XLA's own emitters is faster, while training steps are faster with
YNNPACK (docs/cpu-kernels.md), so the option is set per compiled function, never globally.
"""

INFERENCE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}

# Initialisation runs once: XLA:CPU's optimising backend spends ~1 s compiling each shape's
# threefry random bits (docs/cpu-kernels.md); unoptimised, the same integer arithmetic
# gives the same bits.
INIT_OPTIONS = {"xla_backend_optimization_level": 0}
