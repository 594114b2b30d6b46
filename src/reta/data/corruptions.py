"""The 15 ImageNet-C corruptions at 5 severities, deterministic under a seed, on image batches of any size and channel
count (Hendrycks & Dietterich, ICLR 2019; formulas and constants: hendrycks/robustness
``ImageNet-C/create_c/make_{imagenet,cifar}_c.py``, bethgelab/imagecorruptions ``imagecorruptions/corruptions.py``).

Each corruption maps a float batch ``x`` ``[N, C, H, W]`` in [0, 1], its severity's constants ``c`` (from the
``robustness`` config: CIFAR-10-C's for ≤ 32 px images, ImageNet-C's for large ones) and a seeded
``torch.Generator`` to the corrupted batch, clamped to [0, 1]. Filtering, colour and geometry come from kornia
(``kornia.filters``, ``kornia.color``, ``kornia.geometry``), JPEG from torchvision's libjpeg codec
(``torchvision.io.encode_jpeg``/``decode_jpeg``), pixelation from PIL's BOX filter (as the reference). Built here
where no library has the operation: shot/impulse noise (``torch.poisson``, Bernoulli masks), the defocus disk and the
one-sided Gaussian motion kernel (ImageMagick's, as ImageNet-C), zoom blur, glass blur's local pixel swaps, the
plasma fractal of fog (diamond-square), the snow layer, and **frost**, whose reference blends photographs of frost
that reta does not ship: reta blends a seeded plasma-fractal texture with the same weights instead (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import decode_jpeg, encode_jpeg

from reta.errors import RetaError

Corruption = Callable[[torch.Tensor, Sequence, torch.Generator], torch.Tensor]


def _rand(shape, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage ``gaussian`` (truncate 4, border ``nearest``) through kornia."""
    if sigma <= 0:
        return x
    k = 2 * int(4 * sigma + 0.5) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="replicate")


def gaussian_noise(x, c, g):
    return x + c * torch.randn(x.shape, generator=g)


def shot_noise(x, c, g):
    return torch.poisson(x * c, generator=g) / c


def impulse_noise(x, c, g):
    """skimage ``random_noise(mode='s&p', amount=c)``: each element is replaced with probability c, half by 1."""
    hit, salt = _rand(x.shape, g) < c, _rand(x.shape, g) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    half, ksize = (8, 3) if radius <= 8 else (int(math.ceil(radius)), 5)
    ax = torch.arange(-half, half + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).float()
    disk = kornia.filters.gaussian_blur2d((disk / disk.sum())[None, None], (ksize, ksize), (alias_blur, alias_blur),
                                          border_type="reflect")[0, 0]
    return disk / disk.sum()


def defocus_blur(x, c, g):
    return kornia.filters.filter2d(x, _disk(float(c[0]), float(c[1]))[None], border_type="reflect")


def _motion_kernels(radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur: a one-sided Gaussian (σ) of ``radius`` taps along ``angle`` degrees, one kernel per
    angle ``[N, 2r+1, 2r+1]`` (imagecorruptions ``_motion_blur``)."""
    size = 2 * radius + 1
    w = torch.exp(-torch.arange(radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    kernels = torch.zeros(len(angles), size, size)
    rad = angles.float() * math.pi / 180
    for i in range(radius + 1):
        dy = torch.round(i * torch.sin(rad)).long().clamp(-radius, radius) + radius
        dx = torch.round(i * torch.cos(rad)).long().clamp(-radius, radius) + radius
        kernels[torch.arange(len(angles)), dy, dx] += w[i]
    return kernels


def motion_blur(x, c, g):
    angles = _rand(x.shape[0], g) * 90 - 45
    return kornia.filters.filter2d(x, _motion_kernels(int(c[0]), float(c[1]), angles), border_type="replicate")


def _clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / z)), int(math.ceil(w / z))
    top, left = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(x[..., top:top + ch, left:left + cw], size=(h, w), mode="bilinear", align_corners=False)


def zoom_blur(x, c, g):
    start, stop, step = (float(v) for v in c)
    zooms = np.arange(start, stop, step)
    return (x + sum(_clipped_zoom(x, float(z)) for z in zooms)) / (len(zooms) + 1)


def glass_blur(x, c, g):
    """Blur (σ), quantise, swap every interior pixel with a random neighbour within δ (``iters`` sweeps, bottom-right
    to top-left as the reference), blur again; each image draws its own offsets."""
    sigma, delta, iters = float(c[0]), int(c[1]), int(c[2])
    y = (_gaussian(x, sigma) * 255).floor() / 255
    n, _, h, w = y.shape
    rows = torch.arange(n)
    for _ in range(iters):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                d = torch.randint(-delta, delta, (2, n), generator=g)
                i2, j2 = (i + d[1]).clamp(0, h - 1), (j + d[0]).clamp(0, w - 1)
                a, b = y[rows, :, i, j].clone(), y[rows, :, i2, j2].clone()
                y[rows, :, i, j], y[rows, :, i2, j2] = b, a
    return _gaussian(y, sigma)


def plasma_fractal(n: int, mapsize: int, wibbledecay: float, g: torch.Generator) -> torch.Tensor:
    """``[n, mapsize, mapsize]`` diamond-square heightmaps in [0, 1] (ImageNet-C ``plasma_fractal``)."""
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * (torch.rand(a.shape, generator=g, dtype=torch.float64) * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = wibbled(sq)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return (m / m.amax(dim=(1, 2), keepdim=True)).float()


def _fractal_like(x: torch.Tensor, wibbledecay: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    size = 1 << (max(h, w, 2) - 1).bit_length()  # the smallest power of two ≥ the image side
    return plasma_fractal(x.shape[0], size, wibbledecay, g)[:, None, :h, :w]


def fog(x, c, g):
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    y = x + float(c[0]) * _fractal_like(x, float(c[1]), g)
    return y * top / (top + float(c[0]))


def frost(x, c, g):
    """``c0·x + c1·texture``: the reference's frost photographs replaced by a rough plasma-fractal texture."""
    texture = _fractal_like(x, 1.3, g) ** 2
    return float(c[0]) * x + float(c[1]) * texture


def _grey(x: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(x) if x.shape[1] == 3 else x.mean(1, keepdim=True)


def snow(x, c, g):
    n, _, h, w = x.shape
    layer = float(c[0]) + float(c[1]) * torch.randn(n, 1, h, w, generator=g)
    layer = _clipped_zoom(layer, float(c[2]))
    layer = torch.where(layer < float(c[3]), torch.zeros_like(layer), layer).clamp(0, 1)
    layer = (layer * 255).round() / 255  # the reference passes the layer through an 8-bit PNG
    angles = _rand(n, g) * 90 - 135
    layer = kornia.filters.filter2d(layer, _motion_kernels(int(c[4]), float(c[5]), angles), border_type="replicate")
    y = float(c[6]) * x + (1 - float(c[6])) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return y + layer + layer.flip(-1, -2)


def brightness(x, c, g):
    if x.shape[1] != 3:
        return x + c
    hsv = kornia.color.rgb_to_hsv(x)
    hsv = torch.cat([hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)], 1)
    return kornia.color.hsv_to_rgb(hsv)


def contrast(x, c, g):
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def elastic_transform(x, c, g):
    """Random 3-point affine (±c2·size), then a Gaussian-smoothed (σ = c1·size, truncate 3) uniform displacement
    scaled by c0·size, both with reflected borders (ImageNet-C ``elastic_transform``)."""
    n, _, h, w = x.shape
    size = float(min(h, w))
    alpha, sigma, affine = float(c[0]) * size, float(c[1]) * size, float(c[2]) * size
    centre, sq = torch.tensor([w // 2, h // 2], dtype=torch.float32), float(min(h, w) // 3)
    src = torch.stack([centre + sq, centre + torch.tensor([sq, -sq]), centre - sq])[None].expand(n, 3, 2)
    dst = src + (_rand((n, 3, 2), g) * 2 - 1) * affine
    ones = torch.ones(n, 3, 1)
    m = torch.linalg.solve(torch.cat([src, ones], 2), dst).transpose(1, 2)  # [n, 2, 3]: dst = M @ [src, 1]
    y = kornia.geometry.transform.warp_affine(x, m, (h, w), padding_mode="reflection", align_corners=True)
    noise = _rand((n, 2, h, w), g) * 2 - 1
    if sigma > 0 and alpha > 0:
        k = 2 * int(3 * sigma + 0.5) + 1
        disp = kornia.filters.gaussian_blur2d(noise, (k, k), (sigma, sigma), border_type="reflect") * alpha
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        gx = (xx + disp[:, 0]) / max(w - 1, 1) * 2 - 1
        gy = (yy + disp[:, 1]) / max(h - 1, 1) * 2 - 1
        y = F.grid_sample(y, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="reflection",
                          align_corners=True)
    return y


def _per_image_pil(x: torch.Tensor, fn: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for img in u8:
        arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        res = np.asarray(fn(Image.fromarray(arr)))
        out.append(torch.from_numpy(res.copy()).reshape(img.shape[1], img.shape[2], -1).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def pixelate(x, c, g):
    h, w = x.shape[-2:]
    return _per_image_pil(x, lambda im: im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX))


def jpeg_compression(x, c, g):
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    out = decode_jpeg(encode_jpeg(list(u8), quality=int(c)))
    return torch.stack(out).float() / 255


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness,
    "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}


def block_seed(seed: int, name: str, severity: int) -> int:
    """One generator seed per (seed, corruption, severity) block, independent of which other blocks are made."""
    return int(seed) * 1000 + list(CORRUPTIONS).index(name) * 10 + int(severity)


def check_names(names: Sequence[str], severities: Sequence[int], constants: dict) -> None:
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise RetaError(f"unknown corruption(s) {unknown}; valid: {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if int(s) not in range(1, 6)]
    if bad:
        raise RetaError(f"corruption severities must be in 1..5, got {bad}")
    missing = [n for n in names if len(constants.get(n) or []) != 5]
    if missing:
        raise RetaError(f"the robustness constants need 5 severities for {missing}")


def corrupt(images: torch.Tensor, name: str, severity: int, constants: dict, seed: int,
            batch: int = 1000) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` → the same batch under ``name`` at ``severity`` (1..5), uint8; deterministic in
    ``seed`` (one ``torch.Generator`` per block, consumed batch by batch in order)."""
    check_names([name], [severity], constants)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise RetaError(f"corrupt() needs uint8 [N, C, H, W] images, got {images.dtype} {tuple(images.shape)}")
    c = constants[name][int(severity) - 1]
    g = torch.Generator().manual_seed(block_seed(seed, name, severity))
    out = []
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch].float() / 255
        y = CORRUPTIONS[name](x, c, g)
        out.append((y.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(out)
