"""The upstreams' prediction pipelines, in torch, for application-level parity.

- `bubbliiiing_detect`: bubbliiiing/unet-pytorch `unet.py` `Unet.get_miou_png` /
  `detect_image`'s mask: `cvtColor`, `resize_image` (letterbox, bicubic, grey 128),
  `preprocess_input` (/255), softmax over channels, crop the letterbox, `cv2.resize(...,
  INTER_LINEAR)` back to the image size (here torch's bilinear with align_corners=False,
  the same half-pixel formula without antialiasing), argmax.
- `semseg_test`: meetshah1995/pytorch-semseg `test.py` for a model other than
  pspnet/icnet: `misc.imresize` to the input size (PIL bilinear), RGB -> BGR, minus the
  loader's mean, /255 (`img_norm`), forward, argmax; the mask has the model's output size.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SEMSEG_MEAN = np.array([104.00699, 116.66877, 122.67892])


def _letterbox(image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, int, int]:
    iw, ih = image.size
    w, h = size
    scale = min(w / iw, h / ih)
    nw, nh = int(iw * scale), int(ih * scale)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(image.resize((nw, nh), Image.BICUBIC), ((w - nw) // 2, (h - nh) // 2))
    return canvas, nw, nh


@torch.no_grad()
def bubbliiiing_detect(net: torch.nn.Module, image: Image.Image, input_shape=(512, 512)) -> np.ndarray:
    """(H, W) class ids of `image` as bubbliiiing predicts them (input_shape = (h, w))."""
    image = image.convert("RGB")
    w0, h0 = image.size
    h, w = input_shape
    boxed, nw, nh = _letterbox(image, (w, h))
    x = np.transpose(np.array(boxed, np.float32) / 255.0, (2, 0, 1))[None]
    pr = F.softmax(net(torch.from_numpy(x))[0].permute(1, 2, 0), dim=-1)
    top, left = (h - nh) // 2, (w - nw) // 2
    pr = pr[top:top + nh, left:left + nw].permute(2, 0, 1)[None]
    pr = F.interpolate(pr, size=(h0, w0), mode="bilinear", align_corners=False)
    return pr[0].argmax(0).numpy().astype(np.uint8)


@torch.no_grad()
def semseg_test(net: torch.nn.Module, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """pytorch-semseg test.py's class ids (the model's output size) for input size (h, w)."""
    img = np.array(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
    img = img[:, :, ::-1].astype(np.float64) - SEMSEG_MEAN
    img = img / 255.0
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy()).float()
    return net(x).argmax(1)[0].numpy().astype(np.uint8)


def bubbliiiing_miou(labels: list[np.ndarray], predictions: list[np.ndarray], num_classes: int) -> dict:
    """bubbliiiing `utils_metrics.compute_mIoU`'s numbers (`fast_hist`, `per_class_iu`,
    `per_class_PA_Recall`, `per_class_Precision`, `per_Accuracy`)."""
    hist = np.zeros((num_classes, num_classes))
    for label, pred in zip(labels, predictions):
        a, b = label.flatten(), pred.flatten()
        k = (a >= 0) & (a < num_classes)
        hist += np.bincount(num_classes * a[k].astype(int) + b[k],
                            minlength=num_classes ** 2).reshape(num_classes, num_classes)
    iou = np.diag(hist) / np.maximum(hist.sum(1) + hist.sum(0) - np.diag(hist), 1)
    recall = np.diag(hist) / np.maximum(hist.sum(1), 1)
    precision = np.diag(hist) / np.maximum(hist.sum(0), 1)
    return {"miou": np.nanmean(iou), "mpa": np.nanmean(recall), "iou": iou, "recall": recall,
            "precision": precision, "accuracy": np.sum(np.diag(hist)) / np.maximum(np.sum(hist), 1)}
