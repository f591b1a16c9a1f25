"""unet_jax.import_torch against the real torch modules: hand-written user nets exercising
the op table's less common options (1-D, 2-D, 3-D), MONAI and dynamic-network-architectures
(nnU-Net) nets, smp's zoo (the heavy encoders marked slow). Outputs compared as
max|diff| / max(1, max|torch|): float32 within 1e-4, float64 within 1e-10; train mode (two
SGD steps, BatchNorm and InstanceNorm running statistics) in float64; the state_dict back into
the torch class with strict=True, bit-exact; a saved model loaded where torch cannot be
imported."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import unet_jax
import unet_jax.convert.model_folders
from unet_jax import programs
from unet_jax.convert import torch_packages as upstream
from unet_jax.convert.torch_export import UnsupportedModuleError
from unet_jax.kernels import cpu as cpu_kernels
from unet_jax.parity import harness, user_nets
from unet_jax.train import TrainConfig
from unet_jax.train.finetune import adapt
from unet_jax.train.model import resolve
from unet_jax.train.optimizer import make_optimizer

TOL = harness.TOLERANCE


def _monai():
    return pytest.importorskip("monai.networks.nets")


def _dna():
    return pytest.importorskip("dynamic_network_architectures.architectures.unet")


def _smp():
    try:
        return upstream.import_smp()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))


def _plain_conv_unet(dims: int, stages: int = 4, residual: bool = False):
    arch = _dna()
    conv, norm = getattr(torch.nn, f"Conv{dims}d"), getattr(torch.nn, f"InstanceNorm{dims}d")
    widths = tuple(min(8 * 2 ** i, 32) for i in range(stages))
    strides = (1,) + (2,) * (stages - 1)
    common = dict(conv_op=conv, kernel_sizes=3, strides=strides, num_classes=3, conv_bias=True,
                  norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    if residual:
        return arch.ResidualEncoderUNet(1, stages, widths, n_blocks_per_stage=(1, 2, 2, 2)[:stages],
                                        n_conv_per_stage_decoder=(1,) * (stages - 1), **common)
    return arch.PlainConvUNet(1, stages, widths, n_conv_per_stage=2,
                              n_conv_per_stage_decoder=2, **common)


# name -> (module factory, example NCHW / NCDHW, second size); small widths keep CI fast
CASES = {
    "user_unet_2d": (lambda: user_nets.UserUNet(dims=2), (1, 2, 20, 27), (2, 2, 33, 16)),
    "user_unet_3d_instance": (lambda: user_nets.UserUNet(dims=3, norm="instance", width=4),
                              (1, 2, 9, 12, 10), (2, 2, 12, 8, 11)),
    # F.interpolate on 1-D input exports with its sizes fixed: one size, two batches
    "user_unet_1d_group": (lambda: user_nets.UserUNet(dims=1, norm="group"), (2, 2, 40), (1, 2, 40)),
    "shuffle_net": (lambda: user_nets.ShuffleNet2d(), (1, 1, 32, 24), (2, 1, 16, 40)),
    "monai_unet_2d": (lambda: _monai().UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=2),
                      (1, 1, 32, 32), (2, 1, 48, 32)),
    "monai_unet_3d": (lambda: _monai().UNet(3, 1, 2, (8, 16, 32), (2, 2), num_res_units=1, norm="batch"),
                      (1, 1, 16, 16, 16), (1, 1, 24, 16, 20)),
    "monai_basic_unet": (lambda: _monai().BasicUNet(2, 1, 3, features=(8, 8, 16, 16, 32, 8)),
                         (1, 1, 32, 32), (2, 1, 48, 32)),
    "nnunet_plain_2d": (lambda: _plain_conv_unet(2), (1, 1, 32, 32), (2, 1, 48, 64)),
    "nnunet_plain_3d": (lambda: _plain_conv_unet(3), (1, 1, 16, 16, 16), (1, 1, 24, 16, 32)),
    "nnunet_resenc_2d": (lambda: _plain_conv_unet(2, residual=True), (1, 1, 32, 32), (2, 1, 48, 64)),
    "smp_unet_resnet34": (lambda: _smp().Unet("resnet34", encoder_weights=None, classes=3),
                          (1, 3, 64, 64), (2, 3, 96, 128)),
}
FLOAT64 = ["user_unet_2d", "user_unet_3d_instance", "user_unet_1d_group", "shuffle_net",
           "monai_unet_2d", "nnunet_plain_3d"]


def _channels_last(x: torch.Tensor) -> np.ndarray:
    return np.moveaxis(x.numpy(), 1, -1)


def _compare(model, module, x: torch.Tensor, tol: float) -> float:
    with torch.no_grad():
        want = module(x)
    got = model(jnp.asarray(_channels_last(x)))
    worst = 0.0
    for w, g in zip(jax.tree.leaves(_torch_tree(want, x.ndim)), jax.tree.leaves(got), strict=True):
        assert w.shape == g.shape, (w.shape, g.shape)
        worst = max(worst, float(np.abs(np.asarray(g) - w).max() / max(1.0, np.abs(w).max())))
    assert worst <= tol, worst
    return worst


def _torch_tree(out, rank: int):
    """The torch output as the imported model returns it: input-rank tensors channels-last."""
    if isinstance(out, torch.Tensor):
        a = out.numpy()
        return np.moveaxis(a, 1, -1) if a.ndim == rank else a
    if isinstance(out, dict):
        return {k: _torch_tree(v, rank) for k, v in out.items()}
    return type(out)(_torch_tree(v, rank) for v in out)


FAST = {"user_unet_2d", "nnunet_plain_2d"}  # the fast loop's two; every case in the full suite


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CASES])
def test_float32_parity_at_two_sizes(name):
    make, first, second = CASES[name]
    torch.manual_seed(0)
    module = make().eval()
    harness.randomize_weights(module, moderate=True)
    model = unet_jax.import_torch(module, torch.randn(first))
    for shape in (first, second):
        _compare(model, module, torch.randn(shape), TOL["float32"])


@pytest.mark.slow
@pytest.mark.parametrize("name", FLOAT64)
def test_float64_parity_with_weights_far_from_defaults(name):
    make, first, second = CASES[name]
    torch.manual_seed(1)
    module = make().double().eval()
    harness.randomize_weights(module)
    with jax.enable_x64(True):
        model = unet_jax.import_torch(module, torch.randn(first, dtype=torch.float64))
        assert jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype == jnp.float64
        _compare(model, module, torch.randn(second, dtype=torch.float64), TOL["float64"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["user_unet_2d", "user_unet_3d_instance", "monai_unet_3d",
                                  "nnunet_plain_2d"])
def test_two_sgd_steps_in_train_mode_equal_torch(name):
    """Batch statistics, running-statistic updates (momentum 0.1 and None, InstanceNorm's
    tracked statistics), num_batches_tracked and the gradients of two SGD steps."""
    make, first, _ = CASES[name]
    torch.manual_seed(2)
    module = make().double()
    harness.randomize_weights(module)
    x = torch.randn((2, *first[1:]), dtype=torch.float64)
    with jax.enable_x64(True):
        model = unet_jax.import_torch(module, x)
        model.train()
        module.train()
        opt = torch.optim.SGD(module.parameters(), lr=0.05)

        def loss_of(out):
            leaves = jax.tree.leaves(out)
            return sum((leaf ** 2).mean() for leaf in leaves)

        xj = jnp.asarray(_channels_last(x))
        for _ in range(2):
            opt.zero_grad()
            loss = loss_of([t for t in torch.utils._pytree.tree_leaves(module(x))])
            loss.backward()
            opt.step()
            grads = nnx.grad(lambda m: loss_of(m(xj)))(model)
            params = nnx.state(model, nnx.Param)
            nnx.update(model, jax.tree.map(lambda p, g: p - 0.05 * g, params, nnx.state(grads, nnx.Param)))
        got = unet_jax.to_torch_state_dict(model)
        for key, want in module.state_dict().items():
            want = want.numpy()
            err = np.abs(got[key] - want).max() / max(1.0, np.abs(want).max())
            assert err <= 1e-10, (key, err)


def test_state_dict_goes_back_into_the_torch_class_bit_exact():
    make, first, _ = CASES["user_unet_2d"]
    torch.manual_seed(3)
    module = make()
    harness.randomize_weights(module)
    model = unet_jax.import_torch(module, torch.randn(first))
    fresh = make()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in unet_jax.to_torch_state_dict(model).items()},
                          strict=True)
    for key, value in module.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["nnunet_plain_2d", "nnunet_plain_3d", "user_unet_2d"])
def test_convolution_weights_are_held_spatial_axes_first_and_no_call_transposes_them(name):
    make, first, _ = CASES[name]
    module = make().eval()
    model = unet_jax.import_torch(module, torch.randn(first))
    graphdef, state = nnx.split(model)
    held = dict(state.flat_state())
    used = []  # the convolutions the forward runs, under their first names
    for path, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            sub.register_forward_hook(lambda m, i, o, path=path: used.append((path, m)))
    module(torch.randn(first))
    assert used
    for path, conv in used:
        weight = conv.weight
        array = held[tuple(unet_jax.models.imported.net.flax_path(path + ".weight").split("."))].get_value()
        spatial = tuple(range(2, weight.ndim))
        torch_axes = (*spatial, 0, 1) if conv.transposed else (*spatial, 1, 0)
        assert array.shape == tuple(weight.shape[i] for i in torch_axes), path
    x = jnp.zeros((first[0], *first[2:], first[1]))
    with cpu_kernels.disabled():  # the accelerator program (a CPU kernel may lay weights out its own way)
        jaxpr = jax.make_jaxpr(lambda state, x: nnx.merge(graphdef, state)(x))(state, x).jaxpr
    params = set(jaxpr.invars[:-1])
    transposed = [e for e in jaxpr.eqns if e.primitive.name == "transpose" and e.invars[0] in params]
    assert not transposed, [e.invars[0].aval.shape for e in transposed]


def test_a_tensor_the_module_holds_under_several_names_is_one_parameter():
    # each conv is also registered as all_modules.0 and under decoder.encoder
    make, first, _ = CASES["nnunet_plain_2d"]
    torch.manual_seed(5)
    module = make().eval()
    harness.randomize_weights(module)
    model = unet_jax.import_torch(module, torch.randn(first))
    unique = {t.data_ptr() for t in module.state_dict().values() if t.numel()}
    assert len(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)).flat_state()) == len(unique)
    exported = unet_jax.to_torch_state_dict(model)
    assert exported.keys() == module.state_dict().keys()
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
    alias = "decoder.encoder.stages.0.0.convs.0.conv.weight"
    assert alias in exported
    bad = {**exported, alias: exported[alias] + 1}
    with pytest.raises(unet_jax.convert.engine.ConversionError, match=f"{alias}: .*different values"):
        unet_jax.convert.engine.load_into(lambda: unet_jax.models.imported.ImportedNet(
            **vars(model.config), rngs=nnx.Rngs(0)), unet_jax.models.imported.key_map(model.config),
            bad, target="imported", source="state_dict")


def test_a_graph_written_before_held_layouts_still_reads():
    make, first, _ = CASES["nnunet_plain_2d"]
    torch.manual_seed(4)
    module = make().eval()
    harness.randomize_weights(module)
    x = torch.randn(first)
    model = unet_jax.import_torch(module, x)
    data = json.loads(model.config.graph)
    assert any(e.get("layout") == "kernel" for e in data["state"])
    data["format"] = 1
    for entry in data["state"]:
        entry.pop("layout", None)
    old = unet_jax.models.imported.ImportedConfig(unet_jax.models.imported.graph.dumps(data),
                                                   model.config.num_classes, model.config.in_channels)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    loaded, _ = unet_jax.convert.engine.load_into(
        lambda: unet_jax.models.imported.ImportedNet(**vars(old), rngs=nnx.Rngs(0)),
        unet_jax.models.imported.key_map(old), state, target="format 1", source="state_dict")
    loaded.eval()
    xj = jnp.asarray(_channels_last(x))
    np.testing.assert_array_equal(np.asarray(loaded(xj)), np.asarray(model(xj)))


def test_a_size_the_network_cannot_take_is_named():
    make, first, _ = CASES["nnunet_plain_2d"]
    model = unet_jax.import_torch(make().eval(), torch.randn(first))
    with pytest.raises(ValueError, match="input height 4 does not fit|does not fit"):
        model(jnp.zeros((1, 4, 32, 1)))
    with pytest.raises(ValueError, match="2-D|takes 4-D"):
        model(jnp.zeros((1, 8, 32, 32, 1)))


class _Unsupported(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.inner = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1))

    def forward(self, x):
        y = self.inner(self.conv(x))
        return torch.cumsum(y, 1) + torch.cumsum(y, 2) + torch.fft.fft2(y).real


def test_unsupported_ops_are_listed_with_their_modules_before_anything_is_built():
    with pytest.raises(UnsupportedModuleError) as e:
        unet_jax.import_torch(_Unsupported(), torch.randn(1, 1, 16, 16))
    text = str(e.value)
    assert "aten.cumsum.default: 2 time(s)" in text
    assert "fft" in text


@pytest.mark.slow
def test_saved_imported_model_loads_and_runs_without_torch(tmp_path):
    make, first, _ = CASES["nnunet_plain_3d"]
    torch.manual_seed(4)
    module = make().eval()
    model = unet_jax.import_torch(module, torch.randn(first))
    x = np.random.default_rng(0).standard_normal((1, 16, 24, 16, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(jnp.asarray(x))))
    unet_jax.save(model, tmp_path / "saved")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # importing torch now fails
        sys.modules["dynamic_network_architectures"] = None
        import numpy as np, jax.numpy as jnp, unet_jax
        model = unet_jax.load({str(tmp_path / "saved")!r})
        y = np.asarray(model(jnp.asarray(np.load({str(tmp_path / "x.npy")!r}))))
        want = np.load({str(tmp_path / "y.npy")!r})
        assert np.array_equal(y, want), np.abs(y - want).max()
        print("ok", type(model).__name__)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ok ImportedNet" in r.stdout


@pytest.mark.slow
def test_smp_folder_of_an_unported_architecture_goes_through_the_importer(tmp_path):
    smp = _smp()
    torch.manual_seed(5)
    module = smp.FPN("resnet18", encoder_weights=None, encoder_depth=3, decoder_pyramid_channels=32,
                     decoder_segmentation_channels=32, classes=2).eval()
    harness.randomize_weights(module, moderate=True)
    module.save_pretrained(str(tmp_path / "fpn"))
    model = unet_jax.load_torch(tmp_path / "fpn")
    assert type(model).__name__ == "ImportedNet" and model.config.num_classes == 2
    _compare(model, module, torch.randn(1, 3, 64, 96), TOL["float32"])


def _nnunet_folder(root, dims: int, folds: int):
    """An nnU-Net trained-model folder as nnU-Net writes it: plans with the configuration's
    architecture entry, dataset.json, fold_N/checkpoint_final.pth (network_weights and the
    bookkeeping nnU-Net stores beside them)."""
    import json
    name = {2: "2d", 3: "3d_fullres"}[dims]
    kwargs = {"n_stages": 3, "features_per_stage": [8, 16, 32],
              "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": [[3] * dims] * 3,
              "strides": [[1] * dims, [2] * dims, [2] * dims], "n_conv_per_stage": [2, 2, 2],
              "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
              "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
              "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
              "nonlin_kwargs": {"inplace": True}}
    plans = {"dataset_name": "Dataset001_Test", "plans_name": "nnUNetPlans", "configurations": {name: {
        "patch_size": [32] * dims, "spacing": [1.0] * dims,
        "architecture": {"network_class_name":
                         "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2},
               "file_ending": ".nii.gz", "numTraining": 2}
    folder = root / f"nnUNetTrainer__nnUNetPlans__{name}"
    folder.mkdir()
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    modules = {}
    for fold in range(folds):
        module, _ = unet_jax.convert.model_folders.nnunet_network(plans, dataset, name)
        torch.manual_seed(10 + fold)
        harness.randomize_weights(module, moderate=True)
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": module.state_dict(), "optimizer_state": None,
                    "init_args": {"configuration": name, "fold": fold},
                    "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": tuple(range(dims)),
                    "current_epoch": 1000}, folder / f"fold_{fold}" / "checkpoint_final.pth")
        modules[f"fold_{fold}"] = module.eval()
    return folder, modules


@pytest.mark.slow
@pytest.mark.parametrize("dims,folds", [(2, 2), (3, 1)])
def test_nnunet_model_folder_gives_one_model_per_fold(tmp_path, dims, folds):
    _dna()
    folder, modules = _nnunet_folder(tmp_path, dims, folds)
    models = unet_jax.load_nnunet(folder)
    assert sorted(models) == sorted(modules)
    for fold, model in models.items():
        origin = json.loads(model.config.origin)
        assert origin["kind"] == "nnunet" and origin["fold"] == fold.removeprefix("fold_")
        assert origin["inference_allowed_mirroring_axes"] == list(range(dims))
        assert model.config.num_classes == 3
        _compare(model, modules[fold], torch.randn(1, 1, *[48] + [32] * (dims - 1)), TOL["float32"])
    with pytest.raises(unet_jax.CheckpointError, match="load_nnunet"):
        unet_jax.load_torch(folder)


def _conv_nodes(model) -> int:
    return sum(n.op.startswith(("aten.conv", "aten.convolution")) for n in model.parsed.nodes)


def _convs_of_the_image(model) -> int:
    """Convs that read the input image (no input gradient is needed there)."""
    image = {"$": model.parsed.input_name}
    return sum(n.op.startswith("aten.conv") and n.args[0] == image for n in model.parsed.nodes)


@pytest.mark.parametrize("name", ["nnunet_plain_2d", "monai_unet_3d"])
def test_lowered_for_gpu_and_tpu_every_conv_is_a_convolution(name):
    """The accelerator programs: one `stablehlo.convolution` per conv node forward; the
    train step (bf16, remat) also convolves the input and kernel gradients (3 per conv but
    the input gradients of those reading the image) in bf16; no GEMM anywhere (the CPU kernels stay out)."""
    make, first, _ = CASES[name]
    model = unet_jax.import_torch(make().eval(), torch.randn(first))
    convs = _conv_nodes(model)
    size = tuple(first[2:])
    for dtype, short in (("float32", "f32"), ("bfloat16", "bf16")):
        program = programs.lower_eval_forward(model, 2, size, ("cuda", "tpu"), dtype)
        for text in program.text.values():
            assert programs.op_counts(text).get("stablehlo.dot_general", 0) == 0
            assert programs.convolutions(text) == [(short, short, short)] * convs
    model.train()
    cfg, _ = resolve(TrainConfig(arch="imported", num_classes=model.config.num_classes, image_size=32,
                                 dtype="bfloat16", remat=True))
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, 10), wrt=nnx.Param)
    program = programs.lower_train_step(cfg, model, optimizer, 2, size, ("cuda", "tpu"))
    for text in program.text.values():
        assert programs.op_counts(text).get("stablehlo.dot_general", 0) == 0
        assert set(programs.convolutions(text)) == {("bf16", "bf16", "bf16")}
        assert len(programs.convolutions(text)) == 3 * convs - _convs_of_the_image(model)


@pytest.mark.slow
def test_imported_model_fine_tunes_with_the_train_command(tmp_path):
    """`unet-jax train --init-from` a saved imported model (MONAI keys start with "model.",
    which must not be taken for a wrapper prefix); another class count is refused."""
    from unet_jax.cli.main import main
    torch.manual_seed(6)
    module = _monai().UNet(2, 3, 3, (8, 16, 32), (2, 2), num_res_units=1, norm="batch").eval()
    unet_jax.save(unet_jax.import_torch(module, torch.zeros(1, 3, 64, 64)), tmp_path / "saved")
    code = main(["train", "--init-from", str(tmp_path / "saved"), "--data", "synthetic", "--epochs", "1",
                 "--workdir", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    tuned = unet_jax.load(tmp_path / "run")
    assert type(tuned).__name__ == "ImportedNet"
    assert not np.array_equal(unet_jax.to_torch_state_dict(tuned)["model.0.conv.unit0.conv.weight"],
                              module.state_dict()["model.0.conv.unit0.conv.weight"].numpy())
    with pytest.raises(ValueError, match="imported network keeps the class count"):
        adapt(tuned, num_classes=5)


SMP_ARCHS = ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "PAN", "DeepLabV3",
             "DeepLabV3Plus", "UPerNet"]
SMP_ENCODERS = ["efficientnet-b0", "timm-efficientnet-b0", "resnext50_32x4d", "mobilenet_v2",
                "vgg16_bn", "mit_b0", "tu-convnext_tiny", "mobileone_s0"]


@pytest.mark.slow
@pytest.mark.parametrize("name, encoder", [(a, "resnet34") for a in SMP_ARCHS]
                         + [("Segformer", "mit_b0")] + [("Unet", e) for e in SMP_ENCODERS])
def test_smp_zoo_float32_parity_at_two_sizes(name, encoder):
    """segmentation_models_pytorch's architectures with resnet34 (Segformer with its mit_b0)
    and Unet with other encoder families, weights far from defaults, fp32 at two sizes (PAN's
    pyramid needs 128 px and more)."""
    smp = _smp()
    torch.manual_seed(7)
    module = getattr(smp, name)(encoder, encoder_weights=None, classes=3).eval()
    harness.randomize_weights(module, moderate=True)
    first = 128 if name == "PAN" else 64
    model = unet_jax.import_torch(module, torch.randn(1, 3, first, first))
    for shape in ((1, 3, first, first), (2, 3, first + 32, 2 * first)):
        _compare(model, module, torch.randn(shape), TOL["float32"])


@pytest.mark.slow
def test_smp_dpt_with_the_smallest_vit_float32_parity():
    """smp's DPT over timm's vit_tiny_patch16_224: the ViT's position embeddings fix the size
    at 224, so two batch sizes at that size (the export warns that it is static)."""
    smp = _smp()
    torch.manual_seed(8)
    module = smp.DPT("tu-vit_tiny_patch16_224", encoder_weights=None, classes=3).eval()
    harness.randomize_weights(module, moderate=True)
    model = unet_jax.import_torch(module, torch.randn(1, 3, 224, 224))
    for batch in (1, 2):
        _compare(model, module, torch.randn(batch, 3, 224, 224), TOL["float32"])


class _WeightFromParts(torch.nn.Module):
    """A conv weight assembled from two parameters in a list (torch.cat), one parameter used
    both as a conv weight and elsewhere: both stay in torch's layout."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(2, 3, 3, 3))
        self.b = torch.nn.Parameter(torch.randn(2, 3, 3, 3))
        self.c = torch.nn.Parameter(torch.randn(4, 4, 1, 1))

    def forward(self, x):
        y = torch.nn.functional.conv2d(x, torch.cat([self.a, self.b]), padding=1)
        return torch.nn.functional.conv2d(y, self.c) + self.c.sum()


def test_parameters_inside_lists_or_used_twice_keep_torchs_layout():
    torch.manual_seed(9)
    module = _WeightFromParts().eval()
    x = torch.randn(1, 3, 8, 8)
    model = unet_jax.import_torch(module, x)
    layouts = {e["name"]: e.get("layout", "torch") for e in json.loads(model.config.graph)["state"]}
    assert layouts == {"a": "torch", "b": "torch", "c": "torch"}
    _compare(model, module, torch.randn(2, 3, 12, 8), TOL["float32"])
