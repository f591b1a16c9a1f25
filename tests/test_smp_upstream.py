"""smp_unet / smp_unetplusplus against the real segmentation-models-pytorch (and our torch
transcription, unet_jax/parity/references/smp.py, against it on the same weights).

Each case builds the model with smp itself, puts its weights far from any default init
(harness.randomize_weights(moderate=True): He-scaled convs, random conv biases, signed BatchNorm affine and
random running statistics), loads the state_dict (or a `save_pretrained` folder) with
`unet_jax.load_torch`, the config read off the keys, and compares outputs as
max|diff| / max(1, max|smp|): float64 within 1e-10, float32 within 1e-4. The matrix covers
every option the port takes at least once (encoders, depths, widths, scse, decoder norm under
both spellings, in_channels, classes, Unet at odd sizes) rather than their product.
"""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import unet_jax
import unet_jax.convert.smp_hub
from unet_jax import registry
from unet_jax.convert import torch_packages as upstream
from unet_jax.convert.engine import ConversionError
from unet_jax.parity import harness
from unet_jax.parity.references import REFERENCES

try:
    smp = upstream.import_smp()
except ModuleNotFoundError as e:
    pytest.skip(str(e), allow_module_level=True)

pytestmark = pytest.mark.slow  # the real smp at many options: the full suite
TOL = harness.TOLERANCE  # {"float32": 1e-4, "float64": 1e-10}
ARCHS = {"Unet": "smp_unet", "UnetPlusPlus": "smp_unetplusplus"}

# (smp class, constructor arguments, input HxW, how the weights travel): each encoder, depth,
# in_channels and odd Unet sizes once; per class scse on and off, decoder norm on and off
CASES = [
    # both norm spellings given: decoder_use_batchnorm wins (smp 0.6)
    ("Unet", dict(encoder_name="resnet18", encoder_depth=5, decoder_channels=(32, 16, 16, 16, 16),
                  decoder_attention_type="scse", decoder_use_norm="identity", decoder_use_batchnorm=True,
                  in_channels=3, classes=2), (45, 37), "state_dict"),
    ("Unet", dict(encoder_name="resnet34", encoder_depth=4, decoder_channels=(16, 16, 16, 16),
                  decoder_use_norm="identity", in_channels=1, classes=1), (33, 50), "state_dict"),
    # smp writes both spellings into config.json (decoder_use_norm "batchnorm", the default)
    ("Unet", dict(encoder_name="resnet50", encoder_depth=3, decoder_channels=(32, 16, 16),
                  decoder_attention_type="scse", decoder_use_batchnorm=False, in_channels=4,
                  classes=3), (29, 41), "save_pretrained"),
    ("UnetPlusPlus", dict(encoder_name="resnet18", encoder_depth=4, decoder_channels=(32, 16, 16, 16),
                          decoder_attention_type="scse", classes=2), (32, 48), "state_dict"),
    ("UnetPlusPlus", dict(encoder_name="resnet34", encoder_depth=3, decoder_channels=(16, 16, 16),
                          decoder_use_norm="identity", in_channels=1, classes=1), (24, 40), "state_dict"),
]


def _ids(case) -> str:
    cls, kw, (h, w), via = case
    parts = [cls, kw["encoder_name"], f"d{kw['encoder_depth']}", f"in{kw.get('in_channels', 3)}",
             "scse" if kw.get("decoder_attention_type") else None,
             "nonorm" if kw.get("decoder_use_batchnorm", kw.get("decoder_use_norm")) in (False, "identity")
             else None, f"{h}x{w}", via if via != "state_dict" else None]
    return "-".join(p for p in parts if p)


def smp_model(cls: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """smp's own model (random init, no download), weights randomised far from it, eval mode."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # decoder_use_batchnorm's deprecation; scSE on < 16 channels has a zero-width conv
        warnings.simplefilter("ignore")
        model = getattr(smp, cls)(encoder_weights=None, **kwargs)
    harness.randomize_weights(model, seed, moderate=True)
    return model.eval()


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    return harness.diff("output", ref, got).max_rel


def _jax_forward(model, x: np.ndarray) -> np.ndarray:
    """One compiled program (op by op, every layer shape would compile its own)."""
    return np.asarray(nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x)))


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_real_smp_and_our_transcription_match_unet_jax(case, tmp_path):
    cls, kwargs, size, via = case
    ref = smp_model(cls, **kwargs)
    state = {k: v.numpy().copy() for k, v in ref.state_dict().items()}
    if via == "save_pretrained":
        ref.save_pretrained(tmp_path / "hub")
        assert json.loads((tmp_path / "hub" / "config.json").read_text())["decoder_use_batchnorm"] is False
        source = tmp_path / "hub"
    else:
        source = state
    expected = registry.make_config(ARCHS[cls], **kwargs)
    transcription = REFERENCES[ARCHS[cls]](expected)
    transcription.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    transcription.eval()

    x = np.random.default_rng(1).standard_normal((1, *size, kwargs.get("in_channels", 3)))
    errors = {}
    for dtype in ("float64", "float32"):
        xd = x.astype(dtype)
        y_smp = harness.torch_forward(ref, xd)[0]
        with jax.enable_x64(dtype == "float64"):
            model = unet_jax.load_torch(source, dtype=np.dtype(dtype))
            assert model.config == expected
            y = _jax_forward(model, xd)
        assert y.dtype == dtype and y.shape == (1, *size, kwargs["classes"])
        errors[dtype] = _rel(y_smp, y)
        if dtype == "float64":  # the transcription: the same torch ops in either dtype
            errors["transcription"] = _rel(y_smp, harness.torch_forward(transcription, xd)[0])
        assert np.abs(y_smp).max() > 1.0  # far from defaults: large, not vanishing, outputs
    print(f"\n{_ids(case)}: max|smp| {np.abs(y_smp).max():.3g}; max rel. error "
          + ", ".join(f"{k} {e:.2e}" for k, e in errors.items()))
    assert errors["transcription"] <= TOL["float64"], errors
    for dtype in ("float64", "float32"):
        assert errors[dtype] <= TOL[dtype], f"unet-jax vs smp {dtype}: {errors[dtype]:.3g} > {TOL[dtype]}"


def test_every_option_is_covered():
    def norm(kw):
        spelled = {k: v for k, v in kw.items() if "norm" in k}
        return registry.make_config("smp_unet", **spelled).decoder_use_norm

    seen = {(k, str(v)) for _, kw, _, _ in CASES for k, v in kw.items()}
    for option, values in {"encoder_name": ("resnet18", "resnet34", "resnet50"),
                           "encoder_depth": (3, 4, 5), "in_channels": (1, 3, 4),
                           "decoder_use_batchnorm": (True, False)}.items():
        assert all((option, str(v)) in seen for v in values), (option, values)
    for cls in ARCHS:
        assert {kw.get("decoder_attention_type") for c, kw, _, _ in CASES if c == cls} == {None, "scse"}
        assert {norm(kw) for c, kw, _, _ in CASES if c == cls} == {"batchnorm", "identity"}
    assert {via for *_, via in CASES} == {"state_dict", "save_pretrained"}
    assert any(h % 2 and w % 2 for c, _, (h, w), _ in CASES if c == "Unet")


SMALL = dict(encoder_name="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8))


@pytest.mark.parametrize("value,norm", [(True, "batchnorm"), (False, "identity")])
def test_decoder_use_batchnorm_is_taken_as_smp_takes_it(value, norm):
    """smp 0.6: the deprecated spelling, when not None, wins over decoder_use_norm."""
    other = "identity" if value else "batchnorm"
    ref = smp_model("Unet", decoder_use_norm=other, decoder_use_batchnorm=value, **SMALL)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    model = unet_jax.create_model("smp_unet", decoder_use_norm=other, decoder_use_batchnorm=value, **SMALL)
    assert model.config.decoder_use_norm == norm
    assert sorted(unet_jax.to_torch_state_dict(model)) == sorted(state)
    loaded = unet_jax.load_torch(state, decoder_use_batchnorm=value)
    assert loaded.config == model.config == registry.make_config("smp_unet", decoder_use_norm=norm, **SMALL)
    with pytest.raises(ConversionError):  # the option is honoured: the other norm's keys differ
        unet_jax.load_torch(state, decoder_use_batchnorm=not value)
    # None is "not given", as in smp
    none = registry.make_config("smp_unet", decoder_use_norm=norm, decoder_use_batchnorm=None, **SMALL)
    assert none.decoder_use_norm == norm


@pytest.mark.parametrize("value", [True, False, "BatchNorm", "IDENTITY", {"type": "identity"},
                                   {"type": "batchnorm"}, {"type": "BatchNorm"}, {}, 1, None, "foo"])
def test_norm_spellings_resolve_as_smp_resolves_them(value):
    """smp's get_norm_layer builds a BatchNorm2d or an Identity, or raises ValueError: so do we."""
    from segmentation_models_pytorch.base.modules import get_norm_layer
    try:
        layer = get_norm_layer(value, 8)
    except ValueError:
        with pytest.raises(ValueError, match="decoder_use_norm"):
            registry.make_config("smp_unet", decoder_use_norm=value, **SMALL)
        return
    norm = "batchnorm" if isinstance(layer, torch.nn.BatchNorm2d) else "identity"
    assert isinstance(layer, torch.nn.BatchNorm2d | torch.nn.Identity)
    for key in ("decoder_use_norm", "decoder_use_batchnorm"):
        assert registry.make_config("smp_unet", **{key: value}, **SMALL).decoder_use_norm == norm


def test_inplace_abn_and_other_norms_are_refused_with_the_reason(tmp_path):
    for key in ("decoder_use_batchnorm", "decoder_use_norm"):
        with pytest.raises(ValueError, match=f"{key} 'inplace'.*InPlaceABN.*abs"):
            registry.make_config("smp_unet", **{key: "inplace"}, **SMALL)
    with pytest.raises(ValueError, match="layernorm.*not ported"):
        registry.make_config("smp_unet", decoder_use_norm="layernorm", **SMALL)
    with pytest.raises(ValueError, match="decoder_use_norm 'foo': unknown to smp"):
        registry.make_config("smp_unet", decoder_use_norm="foo", **SMALL)
    with pytest.raises(ValueError, match=r"norm arguments \['eps'\] are not ported"):
        registry.make_config("smp_unet", decoder_use_norm={"type": "batchnorm", "eps": 1e-3}, **SMALL)
    with pytest.raises(ValueError, match="scse.*each >= 16"):
        registry.make_config("smp_unet", decoder_attention_type="scse", **SMALL)
    narrow = smp_model("Unet", decoder_attention_type="scse", **SMALL)  # smp builds it ...
    with pytest.raises(RuntimeError, match="weight of size \\[0, 8, 1, 1\\]"), torch.no_grad():
        narrow(torch.zeros(1, 3, 32, 32))  # ... but torch cannot run its zero-width cSE conv
    # an smp folder of an inplace-ABN model: its config.json says so
    model = unet_jax.create_model("smp_unet", **SMALL)
    unet_jax.convert.smp_hub.save_pretrained(model, tmp_path / "hub")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    (tmp_path / "hub" / "config.json").write_text(json.dumps({**config, "decoder_use_batchnorm": "inplace"}))
    with pytest.raises(ValueError, match="decoder_use_batchnorm 'inplace'.*InPlaceABN"):
        unet_jax.load_torch(tmp_path / "hub")
