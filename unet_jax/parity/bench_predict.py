"""Prediction throughput, JAX vs torch, the whole pipeline on both sides (`unet-jax bench
--predict`): seeded weights of one arch at upstream width in both frameworks,

- photos: 500x375 pictures through the model's preset at the arch's predict size
  (bubbliiiing: letterbox 512x512, softmax, crop, bilinear back, argmax); JAX batched over
  the local devices by `unet_jax.prediction`, torch one image per call as the upstream's
  `detect_image` (`parity.pipelines`);
- one large image (2048x2048) by sliding windows (`--tile`, overlap 0.25, Gaussian
  blending): JAX `unet_jax.prediction`, torch the same windows and weights in a loop.

Images/s after one warm-up pass (JAX compiles there).
"""

import time

import numpy as np

from unet_jax import registry
from unet_jax.data import datasets
from unet_jax.inference import prediction


def _timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up / compile
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def torch_windows(net, image: np.ndarray, predictor: prediction.Predictor) -> np.ndarray:
    """The sliding-window pipeline of `predictor` (pad fit) in torch, window by window."""
    import torch
    h, w = image.shape[:2]
    wy, wx = predictor._window(h), predictor._window(w)
    weight = np.outer(prediction._weights(h, wy, predictor.options.blend),
                      prediction._weights(w, wx, predictor.options.blend))
    acc = np.zeros((max(h, wy), max(w, wx), predictor.classes), np.float32)
    total = np.zeros(acc.shape[:2], np.float32)
    padded = np.pad(image, ((0, max(0, wy - h)), (0, max(0, wx - w)), (0, 0)), mode="reflect")
    with torch.no_grad():
        for y in predictor._starts(h, wy):
            for x in predictor._starts(w, wx):
                x_in = predictor.preset.normalize(padded[None, y:y + wy, x:x + wx])
                logits = net(torch.from_numpy(np.asarray(x_in)).permute(0, 3, 1, 2))
                probs = torch.softmax(logits, 1)[0].permute(1, 2, 0).numpy()
                acc[y:y + wy, x:x + wx] += weight[..., None] * probs
                total[y:y + wy, x:x + wx] += weight
    return (acc / total[..., None])[:h, :w].argmax(-1)


def main(args) -> int:
    import torch
    from PIL import Image

    import unet_jax
    from unet_jax.parity import harness, pipelines
    arch = (args.archs or ["vgg16_unet"])[0]
    config = registry.make_config(arch, num_classes=21) if "num_classes" in registry.get_arch(
        arch).options else registry.make_config(arch)
    net = harness.random_reference(config, seed=0).eval()
    model = unet_jax.load_torch({k: v.numpy() for k, v in net.state_dict().items()})
    photos = [datasets.Shapes(1, height=375, width=500, num_classes=5, seed=i)[0][0]
              for i in range(args.photos)]
    predictor = prediction.Predictor(model, prediction.Options(batch=args.batch))
    jax_s = _timed(lambda: [prediction.masks(p) for p in predictor.probabilities(photos)])
    size = predictor.size
    if predictor.preset.name == "bubbliiiing":
        torch_s = _timed(lambda: [pipelines.bubbliiiing_detect(net, Image.fromarray(p), size)
                                  for p in photos])
    else:
        torch_s = float("nan")
    big = datasets.Shapes(1, height=2048, width=2048, num_classes=5, seed=9)[0][0]
    tiled = prediction.Predictor(model, prediction.Options(fit="pad", tile=args.tile, batch=args.batch))
    jax_big = _timed(lambda: prediction.masks(tiled.probabilities([big])[0]))
    torch_big = _timed(lambda: torch_windows(net, big, tiled))
    windows = len(tiled._starts(2048, tiled._window(2048))) ** 2
    print(f"| arch | pipeline | JAX images/s | torch images/s | ratio (JAX/torch speed) |\n"
          f"|---|---|---|---|---|\n"
          f"| {arch} | {len(photos)} photos 500x375, {predictor.preset.name} {predictor.fit} "
          f"{size[0]}x{size[1]} | {len(photos) / jax_s:.2f} | {len(photos) / torch_s:.2f} | "
          f"{torch_s / jax_s:.2f} |\n"
          f"| {arch} | one 2048x2048, {windows} windows of {tiled._window(2048)} | "
          f"{1 / jax_big:.3f} | {1 / torch_big:.3f} | {torch_big / jax_big:.2f} |")
    print(f"\n{len(predictor.devices)} {predictor.devices[0].platform} device(s), batch "
          f"{predictor.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0
