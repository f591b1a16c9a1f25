"""XLA:CPU compiler options for eval-mode forward passes.

XLA:CPU hands dots, convolutions and reductions to YNNPACK by default. For eval-mode forward
passes keeping them in XLA's own emitters is faster, while training steps are faster with
YNNPACK (README, "CPU kernels"), so the option is set per compiled function, never globally.
"""

INFERENCE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
