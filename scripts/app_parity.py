"""Application-level parity: `unet_jax.predict` against the upstreams' own prediction
pipelines run in torch (`unet_jax/parity/pipelines.py`) on the same seeded weights, upstream widths,
non-square pictures. Prints the share of equal mask pixels per arch and picture.

python scripts/app_parity.py [--size 512] [--photos 3]
"""

import argparse

from PIL import Image

import unet_jax
from unet_jax import registry
from unet_jax.data import datasets as data
from unet_jax.inference import prediction
from unet_jax.parity import harness, pipelines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="bubbliiiing input_shape")
    parser.add_argument("--photos", type=int, default=3)
    args = parser.parse_args()
    shapes = [(375, 500), (500, 375), (333, 500)][: args.photos]
    print("| arch | pipeline | picture (HxW) | equal pixels |\n|---|---|---|---|")
    for arch in ("vgg16_unet", "resnet50_unet"):
        net = harness.random_reference(registry.make_config(arch, num_classes=21), seed=3).eval()
        model = unet_jax.load_torch({k: v.numpy() for k, v in net.state_dict().items()})
        for k, (h, w) in enumerate(shapes):
            photo = data.Shapes(1, height=h, width=w, num_classes=5, seed=k)[0][0]
            want = pipelines.bubbliiiing_detect(net, Image.fromarray(photo), (args.size, args.size))
            got = unet_jax.predict(model, photo, size=(args.size, args.size))
            print(f"| {arch} | bubbliiiing detect_image {args.size}x{args.size} | {h}x{w} | "
                  f"{100 * (got == want).mean():.4f}% |", flush=True)
    net = harness.random_reference(registry.make_config("semseg_unet", n_classes=21), seed=1).eval()
    model = unet_jax.load_torch({k: v.numpy() for k, v in net.state_dict().items()})
    predictor = prediction.Predictor(model, prediction.Options(size=(252, 252)))
    for k, (h, w) in enumerate(shapes):
        photo = data.Shapes(1, height=h, width=w, num_classes=5, seed=k)[0][0]
        want = pipelines.semseg_test(net, Image.fromarray(photo), (252, 252))
        probs = predictor.canvas_probabilities([predictor.canvas(photo)[0]])[0]
        got = prediction.masks(probs[92:160, 92:160])
        print(f"| semseg_unet | pytorch-semseg test.py 252x252 (68x68 out) | {h}x{w} | "
              f"{100 * (got == want).mean():.4f}% |", flush=True)


if __name__ == "__main__":
    main()
