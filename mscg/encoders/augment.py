"""Multi-crop image augmentation for RQ-DINO, written with torch alone (no torchvision).

Images come in as uint8 tensors (3, H, W) (decoded once and cached); views go out as float32 in
[0, 1]. The recipe follows DINO (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021): two global crops (random resized crop of 40-100% of the area) and several
local crops (5-40%), each flipped, colour-jittered, sometimes made grey and blurred; the second
global crop is sometimes solarised.

Every random draw takes an optional `generator`; without one it comes from torch's global RNG (which
the training loop seeds and checkpoints), so a seed fixes the views.

NOTE: torchvision's ColorJitter applies its four jitters in a random order; here the order is fixed
(brightness, contrast, saturation, hue), and hue is a rotation of the chroma plane in YIQ space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class MultiCrop:
    """The multi-crop recipe: sizes in pixels, crop scales as fractions of the image area."""

    global_size: int = 112
    local_size: int = 48
    n_local: int = 4
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)

    def __call__(self, images: list[torch.Tensor], *, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """B uint8 images (3, H, W) -> globals (B, 2, 3, G, G), locals (B, n_local, 3, l, l), floats in [0, 1]."""
        views = []
        for v in range(2):
            x = crops(images, self.global_size, self.global_scale, generator=generator)  # (B, 3, G, G)
            x = photometric(x, blur_p=1.0 if v == 0 else 0.1, solarize_p=0.0 if v == 0 else 0.2,
                            generator=generator)
            views.append(x)
        globals_ = torch.stack(views, dim=1)  # (B, 2, 3, G, G)
        local_views = []
        for _ in range(self.n_local):
            x = crops(images, self.local_size, self.local_scale, generator=generator)  # (B, 3, l, l)
            local_views.append(photometric(x, blur_p=0.5, solarize_p=0.0, generator=generator))
        if local_views:
            locals_ = torch.stack(local_views, dim=1)  # (B, n_local, 3, l, l)
        else:
            locals_ = torch.zeros(len(images), 0, 3, self.local_size, self.local_size)
        return globals_, locals_


def _uniform(low: float, high: float, n: int, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 in [0, 1]."""
    return image.float().div_(255.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float (3, H, W) -> (3, h, w): bilinear with antialiasing when shrinking."""
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp_(0, 1)


def centre_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, size, size): short side resized to `size`, then the centre square.

    The deterministic view that k-means initialisation and item codes are computed from.
    """
    _, h, w = image.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = resize(to_float(image), (nh, nw))
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top:top + size, left:left + size]


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3),
             *, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering `scale` of the area with aspect ratio in `ratio`.

    The rejection sampling of torchvision's RandomResizedCrop: 10 tries, then the central crop.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        draws = torch.rand(4, generator=generator)
        target = area * (scale[0] + (scale[1] - scale[0]) * float(draws[0]))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(draws[1]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(float(draws[2]) * (height - h + 1))
            left = int(float(draws[3]) * (width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crops(images: list[torch.Tensor], size: int, scale: tuple[float, float], *,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """A random resized crop of each uint8 image, resized to (size, size): (B, 3, size, size) in [0, 1]."""
    out = []
    for image in images:
        top, left, h, w = crop_box(image.shape[1], image.shape[2], scale, generator=generator)
        out.append(resize(to_float(image[:, top:top + h, left:left + w]), (size, size)))
    return torch.stack(out)


def photometric(x: torch.Tensor, *, blur_p: float, solarize_p: float, flip_p: float = 0.5, jitter_p: float = 0.8,
                gray_p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The per-view pixel augmentations of DINO on a batch (B, 3, H, W) in [0, 1]."""
    x = hflip(x, flip_p, generator=generator)
    x = color_jitter(x, p=jitter_p, generator=generator)
    x = random_grayscale(x, gray_p, generator=generator)
    x = gaussian_blur(x, blur_p, generator=generator)
    return solarize(x, solarize_p, generator=generator)


def hflip(x: torch.Tensor, p: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of (B, 3, H, W) left-right with probability p."""
    flip = torch.rand(x.shape[0], generator=generator) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    w = x.new_tensor(GRAY_WEIGHTS)[None, :, None, None]
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, *, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
                 hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue per image of (B, 3, H, W), applied with probability p."""
    B = x.shape[0]
    apply = torch.rand(B, generator=generator) < p  # (B,)
    b = _uniform(1 - brightness, 1 + brightness, B, generator)[:, None, None, None]
    c = _uniform(1 - contrast, 1 + contrast, B, generator)[:, None, None, None]
    s = _uniform(1 - saturation, 1 + saturation, B, generator)[:, None, None, None]
    h = _uniform(-hue, hue, B, generator)  # (B,) fraction of a full turn
    y = (x * b).clamp(0, 1)
    mean = grayscale(y).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    y = ((y - mean) * c + mean).clamp(0, 1)
    gray = grayscale(y)  # (B, 1, H, W)
    y = ((y - gray) * s + gray).clamp(0, 1)
    y = rotate_hue(y, h)
    return torch.where(apply[:, None, None, None], y, x)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) by `turns` (B,) of a full circle (a rotation of I, Q in YIQ)."""
    angle = turns.to(torch.float32) * 2 * math.pi
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(turns), 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    matrix = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(x)  # (B, 3, 3): RGB -> YIQ -> rotate -> RGB
    B, C, H, W = x.shape
    return torch.bmm(matrix, x.reshape(B, C, H * W)).reshape(B, C, H, W).clamp_(0, 1)


def random_grayscale(x: torch.Tensor, p: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image of (B, 3, H, W) by its luma (3 equal channels) with probability p."""
    gray = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(gray[:, None, None, None], grayscale(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, p: float, *, sigma: tuple[float, float] = (0.1, 2.0),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur each image of (B, 3, H, W) with probability p, sigma uniform in `sigma`.

    Sigma is in pixels of a 224-pixel view and scaled to the actual size, so small crops blur alike.
    """
    B, C, H, W = x.shape
    apply = torch.rand(B, generator=generator) < p
    sigmas = _uniform(sigma[0], sigma[1], B, generator) * (min(H, W) / 224)
    chosen = apply.nonzero().flatten()
    if len(chosen) == 0:
        return x
    s = sigmas[chosen].clamp(min=1e-3)  # (b,)
    radius = max(1, min(math.ceil(3 * float(s.max())), (min(H, W) - 1) // 2))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / s[:, None].to(x.dtype)) ** 2)  # (b, k)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(C, dim=0)  # (b*C, k)
    y = x[chosen].reshape(1, len(chosen) * C, H, W)  # (1, b*C, H, W): one group per channel
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=y.shape[1])
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=y.shape[1])
    out = x.clone()
    out[chosen] = y.reshape(len(chosen), C, H, W).clamp(0, 1)
    return out


def solarize(x: torch.Tensor, p: float, *, threshold: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Invert the pixels above `threshold` of each image of (B, 3, H, W) with probability p."""
    apply = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(apply[:, None, None, None] & (x >= threshold), 1 - x, x)
