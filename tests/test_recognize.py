"""Checkpoints of networks that are not ported: the error says what the file looks like
(project, network, encoder) and what to do, with keys named as stored. The state dicts
come from the real packages (smp, MONAI, dynamic_network_architectures, torchvision)."""

import pytest
import torch
from monai.networks import nets as monai_nets
from safetensors.torch import save_file

import unet_jax
from unet_jax.cli import main as cli_main
from unet_jax.convert.torch_packages import import_smp

smp = import_smp()


def _nnunet_plain():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    return PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv3d, 3, (1, 2, 2), (2, 2, 2), 2, (2, 2),
                         False, torch.nn.InstanceNorm3d, {"affine": True}, None, None,
                         torch.nn.LeakyReLU)


def _nnunet_residual():
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    return ResidualEncoderUNet(1, 3, (8, 16, 32), torch.nn.Conv2d, 3, (1, 2, 2), (1, 1, 1), 2,
                               (1, 1), False, torch.nn.InstanceNorm2d, {"affine": True}, None,
                               None, torch.nn.LeakyReLU)


def _torchvision_resnet18():
    import torchvision  # after import_smp: its compiled ops' schemas are declared
    return torchvision.models.resnet18()


CASES = [
    (lambda: smp.FPN("resnet18", encoder_weights=None, classes=2),
     "FPN from segmentation_models_pytorch \\(encoder: resnet18-style\\): this network is not ported"),
    (lambda: smp.DeepLabV3Plus("resnet34", encoder_weights=None, classes=3),
     "DeepLabV3Plus from segmentation_models_pytorch \\(encoder: resnet34-style\\)"),
    (lambda: smp.Linknet("resnet18", encoder_weights=None), "Linknet from segmentation_models_pytorch"),
    (lambda: smp.PSPNet("resnet18", encoder_weights=None), "PSPNet from segmentation_models_pytorch"),
    (lambda: smp.Unet("efficientnet-b0", encoder_weights=None, classes=2),
     "Unet from segmentation_models_pytorch \\(encoder: efficientnet-b\\* \\(efficientnet-pytorch\\)\\): "
     "smp_unet is ported with resnet18 / resnet34 / resnet50 encoders only"),
    (lambda: smp.Unet("resnext50_32x4d", encoder_weights=None, classes=2),
     "Unet from segmentation_models_pytorch \\(encoder: resnext\\)"),
    (lambda: smp.UnetPlusPlus("mobilenet_v2", encoder_weights=None, classes=2),
     "UnetPlusPlus from segmentation_models_pytorch \\(encoder: mobilenet_v2"),
    (lambda: monai_nets.UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2)), "UNet from MONAI"),
    (lambda: monai_nets.UNet(3, 1, 2, channels=(8, 16), strides=(2,), num_res_units=2),
     "UNet from MONAI"),
    (lambda: monai_nets.BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)), "BasicUNet from MONAI"),
    (lambda: monai_nets.AttentionUnet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2)),
     "AttentionUnet from MONAI"),
    (lambda: monai_nets.SegResNet(2, 8, 1, 2), "SegResNet from MONAI"),
    (_nnunet_plain, "PlainConvUNet from nnU-Net"),
    (_nnunet_residual, "ResidualEncoderUNet from nnU-Net"),
    (_torchvision_resnet18, "ResNet \\(an image classifier\\) from torchvision: a classifier, not a "
     "segmentation model: .*--backbone-weights"),
]


@pytest.mark.parametrize("make, message", CASES, ids=[c[1].split(" ")[0] + str(i) for i, c in
                                                       enumerate(CASES)])
def test_not_ported_networks_are_named(make, message, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "ckpt.pth"
    torch.save(make().state_dict(), path)
    with pytest.raises(unet_jax.ConversionError, match=f"ckpt.pth looks like {message}"):
        unet_jax.load_torch(path)
    with pytest.raises(unet_jax.ConversionError, match="looks like"):  # an explicit arch too
        unet_jax.load_torch(path, arch="smp_unet")


def test_wrapped_checkpoints_are_named_as_stored(tmp_path, capsys):
    """A MONAI UNet under {"model": ...} (keys `model.0.conv...`), an nnU-Net
    checkpoint_final.pth, and an smp FPN in safetensors through the CLI (exit 2, one line)."""
    torch.manual_seed(0)
    monai = monai_nets.UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2))
    torch.save({"model": monai.state_dict(), "epoch": 3}, tmp_path / "monai.pth")
    torch.save({"network_weights": _nnunet_plain().state_dict(), "optimizer_state": {},
                "trainer_name": "nnUNetTrainer", "current_epoch": 1000}, tmp_path / "checkpoint_final.pth")
    fpn = smp.FPN("resnet18", encoder_weights=None, classes=2)
    save_file({k: v.contiguous() for k, v in fpn.state_dict().items()}, tmp_path / "model.safetensors")
    for name, network in (("monai.pth", "UNet from MONAI"),
                          ("checkpoint_final.pth", "PlainConvUNet from nnU-Net"),
                          ("model.safetensors", "FPN from segmentation_models_pytorch")):
        assert cli_main(["convert", str(tmp_path / name), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name} looks like {network}"), err
        assert "mis-shaped" not in err and "encoder_depth" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_keys_are_listed_as_stored():
    state = {"module.body.0.weight": torch.zeros(4, 3, 3, 3), "module.body.0.bias": torch.zeros(4)}
    with pytest.raises(unet_jax.ConversionError) as e:
        unet_jax.load_torch(state)
    message = str(e.value)
    assert "fits none of the ported archs (keys as stored: module.body.0.weight, module.body.0.bias)" \
        in message
    assert "mis-shaped" not in message


def test_ported_networks_are_still_loaded():
    """The recogniser never stands in the way of a ported arch (smp Unet with resnet18)."""
    torch.manual_seed(0)
    ref = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 8),
                   classes=2)
    model = unet_jax.load_torch(ref.state_dict())
    assert model.config.encoder_name == "resnet18" and model.config.encoder_depth == 3
