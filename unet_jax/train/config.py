"""`TrainConfig`: every training option, one field each, with its one-line help (the CLI's
flags are built from these comments)."""

import dataclasses
import inspect
import json
import re

from unet_jax import presets
from unet_jax.data import augment
from unet_jax.data.imageio import IGNORE_INDEX
from unet_jax.train import losses

DEFAULT_ARCH, DEFAULT_CLASSES = "imgseg_unet", 4


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    arch: str = ""  # registered arch name (unet-jax list); "": the init_from model's, else imgseg_unet
    model: dict = dataclasses.field(default_factory=dict)  # arch options (unet-jax list names them)
    num_classes: int = 0  # classes incl. background (1 channel for "bce"); 0: init_from's, else 4
    init_from: str = ""  # torch checkpoint, saved model or training workdir to start from (fine-tune)
    backbone_weights: str = ""  # torchvision ImageNet file for the encoder (vgg16/resnet50_unet, smp archs)
    data: str = "synthetic"  # synthetic | folder:PATH (layout detected) | LAYOUT:PATH | tfds:NAME[:TRAIN:VAL]
    tfds_data_dir: str = ""  # tfds:NAME only: the prepared data_dir ("": tfds's default)
    image_size: int = 0  # training images are image_size x image_size (0: the arch's default)
    augment: str = ""  # ops joined by + or a preset (unet_jax.augment), e.g. scale(0.5,2)+crop+hflip+hsv
    preprocess: str = ""  # input preset ("": init_from's recorded one, else the arch's upstream one)
    out_of_range: str = "error"  # mask values >= num_classes (not ignore_index): error | ignore
    train_samples: int = 256  # synthetic only: samples in the training split
    val_samples: int = 64  # synthetic: samples in the validation split; volumes: fixed validation patches
    batch_size: int = 0  # global batch, split evenly over all devices (0: the arch's default)
    epochs: int = 10  # passes over the training split (volumes: of steps_per_epoch steps)
    steps_per_epoch: int = 250  # volumes: steps per epoch (nnU-Net's num_iterations_per_epoch)
    fold: int = 0  # volumes: the fold validated on (splits_final.json's, else nnU-Net's 5-fold split)
    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 0.0  # peak learning rate (0: the arch's default)
    momentum: float = 0.9  # sgd momentum (0 disables it)
    nesterov: bool = False  # sgd Nesterov momentum
    weight_decay: float = 1e-4  # decoupled for adamw, added to the gradient for sgd/adam
    schedule: str = "cosine"  # constant | step | cosine | poly | poly_epoch (stepped per epoch, nnU-Net's)
    warmup_epochs: float = -1.0  # linear warm-up before the cosine decay (-1: the arch's default)
    step_epochs: int = 50  # step schedule: decay every step_epochs (torch StepLR step_size)
    step_gamma: float = 0.1  # step schedule: decay factor (torch StepLR gamma)
    poly_power: float = 0.9  # poly schedule: lr * (1 - t/T)^power
    clip_norm: float = 0.0  # clip gradients to this global norm (0 disables)
    freeze_backbone_epochs: int = 0  # keep the pretrained backbone / encoder fixed for these epochs
    loss: str = ""  # weighted sum of ce, bce, dice, focal, e.g. "ce+0.5*dice" ("": the arch's default)
    head_weights: tuple = ()  # deep supervision: weight per head (empty: mean of the heads)
    ignore_index: int = IGNORE_INDEX  # mask value excluded from loss and metrics
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params, BN stats, loss stay f32)
    remat: bool = False  # recompute activations in the backward pass (saves memory)
    seed: int = 0  # model init, data order and synthetic data
    workdir: str = "runs/train"  # checkpoints, metrics.jsonl, TensorBoard events and pictures
    checkpoint_every: int = 0  # steps between periodic checkpoints (0: every epoch)
    keep: int = 2  # periodic checkpoints kept (the best by val mIoU is kept separately)
    stop_at_step: int = 0  # stop (with a checkpoint) after this many steps; 0 runs to the end
    progress: bool = True  # show a progress bar
    log_every: int = 10  # steps between loss read-backs (progress bar, TensorBoard, non-finite checks)
    on_nonfinite: str = "stop"  # a NaN/Inf loss or gradient: stop (an error) | skip (the step, counted)
    bad_files: str = "error"  # an unreadable image/mask file: error | skip (all files checked before step 1)
    data_threads: int = 4  # background threads decoding and augmenting batches (0: none)
    coordinator: str = ""  # multi-host: coordinator host:port (or JAX's environment variables)
    num_processes: int = 0  # multi-host: number of processes (0: from the environment)
    process_id: int = -1  # multi-host: this process (-1: from the environment)
    given: tuple = ()  # the fields set on the command line (volumes keep these, not nnU-Net's defaults)

    def __post_init__(self):
        choices = {"optimizer": ("sgd", "adam", "adamw"), "dtype": ("float32", "bfloat16"),
                   "schedule": ("constant", "step", "cosine", "poly", "poly_epoch"),
                   "on_nonfinite": ("stop", "skip"), "bad_files": ("error", "skip")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        if self.loss:
            losses.parse_loss(self.loss)
        if self.preprocess:
            presets.get(self.preprocess)
        augment.parse(self.augment)


def dump_config(cfg: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2)


def field_comments() -> dict[str, str]:
    """{field: its one-line comment} read from TrainConfig's source."""
    found = re.findall(r"^    (\w+): [^=]+=.*?  # (.+)$", inspect.getsource(TrainConfig), re.M)
    return dict(found)
