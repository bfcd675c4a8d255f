"""Procedural medical-like images with known ground truth (the degradations: :mod:`unimedvl.medsynth.degradations`).

This is the image half of MedSynth (the records live in :mod:`unimedvl.medsynth.generator`).

A :class:`Scene` is a modality, an image size, a few anatomy parameters, a texture seed and a list
of :class:`Lesion` s. :func:`render` is a pure function of the scene, and lesions are composited
last (before point-wise noise and windowing) with an alpha that is exactly zero outside each
lesion disc. So the same scene rendered without its lesions is byte-identical outside the discs:
the counterfactual task and its test rely on this.

Conventions
- Coordinates: y down, x right. Anatomy parameters are fractions of the image side; lesion centres
  and radii are in pixels (a scene is built for one image size).
- Left/right for CT, MRI and chest X-ray follow the radiological convention: the patient's left is
  on the image's right. Histology and fundus lesions are placed by image quadrant ("upper left"...).
- Output: uint8, (H, W) for CT / MRI / X-ray, (H, W, 3) for histology and fundus.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from unimedvl.imaging.transforms import resize
from unimedvl.medsynth.degradations import to_uint8

MODALITIES = ("ct", "mri", "x-ray", "histology", "fundus")
GRAYSCALE = frozenset({"ct", "mri", "x-ray"})
QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
REGIONS = {
    "ct": ("left lung", "right lung"),
    "mri": ("left hemisphere", "right hemisphere"),
    "x-ray": ("left lung", "right lung"),
    "histology": QUADRANTS,
    "fundus": QUADRANTS,
}
# Lesion design rule: a lesion must be resolvable by a small ViT with 14 px patches trained from
# scratch at the demo's image size. The demo feeds 64 px images to the ViT at 70 px (5 x 5 patches
# of ~12.8 image pixels); lesions of radius 0.035-0.085 of the side (2-5 px, mostly under a third
# of a patch) left a presence probe near the majority answer, radius >= 0.07 (diameter >= 0.7 of
# a patch) lifts it far above (BENCHMARKS.md, bench/lesion_visibility.py). So every lesion has
# radius >= LESION_MIN_RADIUS of the image side, in train and test alike, and stands out from
# its tissue by >= 25 grey levels (tests/test_synthetic.py checks both).
LESION_SIZES = {"small": (0.07, 0.085), "large": (0.095, 0.115)}  # radius as a fraction of the side
LESION_MIN_RADIUS = LESION_SIZES["small"][0]
_LESION_SCALE = {"histology": 1.8}  # a tumour cluster must hold several nuclei to read as one

# Stain optical-density directions (R, G, B) used for the Beer-Lambert colour model of histology.
_HAEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_EOSIN = np.array([0.072, 0.990, 0.105])
_DAB = np.array([0.268, 0.570, 0.776])


@dataclass(frozen=True)
class Lesion:
    """One lesion disc: where it is (pixels), how big, and the named region it lies in."""

    region: str  # e.g. "left lung", "right hemisphere", "upper left"
    cy: float  # centre row, pixels (pixel i covers [i, i + 1))
    cx: float  # centre column, pixels
    r: float  # radius, pixels; the lesion touches no pixel whose centre lies outside it
    size: str  # "small" or "large"

    def to_json(self) -> dict:
        """The lesion as stored in a record (rounded so the JSONL stays readable)."""
        return {
            "region": self.region,
            "center": [round(self.cy, 2), round(self.cx, 2)],
            "radius": round(self.r, 2),
            "size": self.size,
        }


@dataclass(frozen=True)
class Scene:
    """Everything :func:`render` needs; rendering is a pure function of it."""

    modality: str  # one of MODALITIES
    size: int  # image side in pixels
    anatomy: dict  # modality-specific shape parameters (fractions of the side)
    seed: int  # texture seed: all rendering noise comes from it, in a fixed order
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)

    def without_lesions(self) -> Scene:
        """The same anatomy and textures with every lesion removed."""
        return replace(self, lesions=())


# ---------------------------------------------------------------------------------------------
# Shape helpers (normalised coordinates, 1-pixel anti-aliased edges).


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates yy, xx: (size, size) each, in (0, 1)."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def _ellipse(g, size, cy, cx, ry, rx, theta=0.0, wobble=()) -> np.ndarray:
    """Soft ellipse mask in [0, 1]; ``wobble`` = [(amplitude, k, phase)] modulates the radius."""
    yy, xx = g
    dy, dx = yy - cy, xx - cx
    if theta:
        c, s = np.cos(theta), np.sin(theta)
        dy, dx = c * dy - s * dx, s * dy + c * dx
    d = np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2)
    if wobble:
        ang = np.arctan2(dy / ry, dx / rx)
        d = d / (1.0 + sum(a * np.sin(k * ang + p) for a, k, p in wobble))
    return np.clip(0.5 - (d - 1.0) * min(ry, rx) * size, 0.0, 1.0)


def _segment(g, size, p0, p1, half_width) -> np.ndarray:
    """Soft band around the segment p0 -> p1 (points as (y, x))."""
    yy, xx = g
    (y0, x0), (y1, x1) = p0, p1
    vy, vx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / (vy * vy + vx * vx), 0.0, 1.0)
    d = np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx))
    return np.clip(0.5 - (d - half_width) * size, 0.0, 1.0)


def _mix(base: np.ndarray, value, alpha: np.ndarray) -> np.ndarray:
    """Paint ``value`` over ``base`` with opacity ``alpha`` (broadcast over colour channels)."""
    if base.ndim == 3:
        alpha = alpha[..., None]
    return base * (1.0 - alpha) + np.asarray(value) * alpha


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``scale`` (fraction)."""
    field_ = ndimage.gaussian_filter(rng.standard_normal((size, size)), max(scale * size, 0.5), mode="wrap")
    return (field_ - field_.mean()) / (field_.std() + 1e-8)


def _pixel_dist(size: int, cy: float, cx: float) -> np.ndarray:
    """Distance in pixels from each pixel centre to (cy, cx)."""
    c = np.arange(size) + 0.5
    return np.hypot(c[:, None] - cy, c[None, :] - cx)


def _lesion_alpha(scene: Scene, lesion: Lesion, ramp: float = 0.35) -> np.ndarray:
    """Opacity of one lesion: 1 in its core, a soft rim, exactly 0 at or beyond its radius."""
    d = _pixel_dist(scene.size, lesion.cy, lesion.cx)
    return np.clip((lesion.r - d) / (ramp * lesion.r), 0.0, 1.0)


def lesion_mask(scene: Scene) -> np.ndarray:
    """Boolean (H, W): pixels whose centre lies inside any lesion disc (where lesions may paint)."""
    mask = np.zeros((scene.size, scene.size), bool)
    for les in scene.lesions:
        mask |= _pixel_dist(scene.size, les.cy, les.cx) < les.r
    return mask


def _quadrant_masks(g) -> dict[str, np.ndarray]:
    yy, xx = g
    up, left = yy < 0.5, xx < 0.5
    return {"upper left": up & left, "upper right": up & ~left, "lower left": ~up & left, "lower right": ~up & ~left}


# ---------------------------------------------------------------------------------------------
# CT: axial chest slice in Hounsfield-like units, shown through a fixed window.

_CT_WINDOW = (-350.0, 1400.0)  # level, width: lungs dark grey, soft tissue light grey, bone white


def _ct_sample(rng) -> dict:
    u = rng.uniform
    # Lungs wide enough for two lesions of the design-rule size each (LESION_SIZES).
    return dict(
        cy=0.5 + u(-0.02, 0.02),
        cx=0.5 + u(-0.02, 0.02),
        ay=u(0.31, 0.35),
        ax=u(0.41, 0.45),
        lung_dx=u(0.185, 0.2),
        lung_ry=u(0.21, 0.24),
        lung_rx=u(0.135, 0.15),
        heart=u(0.075, 0.09),
    )


def _ct_shapes(a: dict, size: int) -> dict:
    g = _grid(size)
    cy, cx, ay, ax = a["cy"], a["cx"], a["ay"], a["ax"]
    lungs = {
        side: _ellipse(g, size, cy - 0.03, cx + sgn * a["lung_dx"], a["lung_ry"], a["lung_rx"])
        for side, sgn in (("right lung", -1), ("left lung", 1))
    }  # patient's left = image right
    ribs = np.zeros((size, size))
    for deg in (-70, -45, -20, 5, 30, 55):
        for sgn in (-1, 1):
            t = np.deg2rad(deg)
            ry, rx = cy + (ay - 0.03) * np.sin(t), cx + sgn * (ax - 0.035) * np.cos(t)
            ribs = np.maximum(ribs, _ellipse(g, size, ry, rx, 0.018, 0.018))
    return dict(
        g=g,
        body=_ellipse(g, size, cy, cx, ay, ax),
        muscle=_ellipse(g, size, cy, cx, ay - 0.035, ax - 0.04),
        lungs=lungs,
        heart=_ellipse(g, size, cy - 0.04, cx + 0.04, a["heart"], a["heart"] * 1.15),
        aorta=_ellipse(g, size, cy + 0.1, cx + 0.06, 0.032, 0.032),
        vertebra=_ellipse(g, size, cy + ay - 0.13, cx, 0.055, 0.06),
        marrow=_ellipse(g, size, cy + ay - 0.13, cx, 0.04, 0.045),
        canal=_ellipse(g, size, cy + ay - 0.06, cx, 0.022, 0.022),
        sternum=_ellipse(g, size, cy - ay + 0.05, cx, 0.02, 0.035),
        ribs=ribs,
        table=_segment(g, size, (cy + ay + 0.05, cx - 0.35), (cy + ay + 0.05, cx + 0.35), 0.008),
    )


def _ct_regions(scene: Scene) -> dict[str, np.ndarray]:
    s = _ct_shapes(scene.anatomy, scene.size)
    return {side: (m >= 0.99) & (s["heart"] <= 0.0) for side, m in s["lungs"].items()}


def _render_ct(scene: Scene) -> np.ndarray:
    s, tex = _ct_shapes(scene.anatomy, scene.size), np.random.default_rng(scene.seed)
    n = scene.size
    lung_tex, vessels, quantum = _smooth_noise(tex, n, 0.04), _smooth_noise(tex, n, 0.012), tex.standard_normal((n, n))
    hu = np.full((n, n), -1000.0)
    hu = _mix(hu, -100.0, s["body"])  # subcutaneous fat
    hu = _mix(hu, 45.0 + 10.0 * lung_tex, s["muscle"])
    for m in s["lungs"].values():
        hu = _mix(hu, -860.0 + 25.0 * lung_tex + 500.0 * np.clip(vessels - 2.2, 0.0, 1.0), m)
    hu = _mix(hu, 40.0, s["heart"])
    hu = _mix(hu, 160.0, s["aorta"])  # contrast-enhanced blood
    hu = _mix(_mix(hu, 900.0, s["vertebra"]), 350.0, s["marrow"])
    hu = _mix(hu, 15.0, s["canal"])
    hu = _mix(_mix(hu, 750.0, s["ribs"]), 600.0, s["sternum"])
    hu = _mix(hu, 300.0, s["table"])
    for les in scene.lesions:  # soft-tissue nodule
        hu = _mix(hu, 35.0, _lesion_alpha(scene, les))
    hu = hu + 12.0 * quantum
    level, width = _CT_WINDOW
    return to_uint8((hu - (level - width / 2)) / width)


# ---------------------------------------------------------------------------------------------
# MRI: axial T1-like brain slice (bright scalp fat, dark skull and CSF, white > grey matter).


def _mri_sample(rng) -> dict:
    u = rng.uniform
    return dict(
        cy=0.5 + u(-0.02, 0.02),
        cx=0.5 + u(-0.015, 0.015),
        ay=u(0.4, 0.44),
        ax=u(0.32, 0.35),
        k=int(rng.choice([9, 11, 13])),
        ph=u(0, 2 * np.pi),
        ph2=u(0, 2 * np.pi),
        vent=u(0.8, 1.2),
    )


def _mri_shapes(a: dict, size: int) -> dict:
    g = _grid(size)
    cy, cx, ay, ax = a["cy"], a["cx"], a["ay"], a["ax"]
    gyri = [(0.05, a["k"], a["ph"]), (0.03, a["k"] + 6, a["ph2"])]
    v = a["vent"]
    yy, xx = g
    ventricles = np.maximum(
        _ellipse(g, size, cy - 0.02, cx - 0.04, 0.09 * v, 0.025 * v, theta=0.3),
        _ellipse(g, size, cy - 0.02, cx + 0.04, 0.09 * v, 0.025 * v, theta=-0.3),
    )
    fissure = np.exp(-(((xx - cx) / 0.008) ** 2)) * ((yy < cy - 0.14) | (yy > cy + 0.14))
    return dict(
        g=g,
        head=_ellipse(g, size, cy, cx, ay, ax),
        skull=_ellipse(g, size, cy, cx, ay - 0.025, ax - 0.025),
        csf=_ellipse(g, size, cy, cx, ay - 0.045, ax - 0.045),
        gm=_ellipse(g, size, cy, cx, ay - 0.055, ax - 0.055, wobble=[(0.015, a["k"] * 2, a["ph"])]),
        wm=_ellipse(g, size, cy, cx, (ay - 0.055) * 0.8, (ax - 0.055) * 0.76, wobble=gyri),
        ventricles=ventricles,
        fissure=fissure,
    )


def _mri_regions(scene: Scene) -> dict[str, np.ndarray]:
    s = _mri_shapes(scene.anatomy, scene.size)
    # Lesions lie in the parenchyma (grey or white matter): white matter alone is too narrow for
    # lesions of the design-rule size.
    ok = (s["gm"] >= 0.99) & (s["ventricles"] <= 0.0) & (s["fissure"] < 0.05)
    xx, cx = s["g"][1], scene.anatomy["cx"]
    return {"left hemisphere": ok & (xx > cx + 0.02), "right hemisphere": ok & (xx < cx - 0.02)}


def _render_mri(scene: Scene) -> np.ndarray:
    s, tex, n = _mri_shapes(scene.anatomy, scene.size), np.random.default_rng(scene.seed), scene.size
    bias, grain = _smooth_noise(tex, n, 0.3), _smooth_noise(tex, n, 0.02)
    noise_re, noise_im = tex.standard_normal((n, n)), tex.standard_normal((n, n))
    img = np.zeros((n, n))
    img = _mix(img, 0.78, s["head"])  # scalp fat
    img = _mix(img, 0.08, s["skull"])
    img = _mix(img, 0.2, s["csf"])
    img = _mix(img, 0.45 + 0.02 * grain, s["gm"])
    img = _mix(img, 0.7 + 0.015 * grain, s["wm"])
    img = _mix(img, 0.15, s["ventricles"])
    img = _mix(img, 0.2, s["fissure"] * s["gm"])
    for les in scene.lesions:  # enhancing lesion
        img = _mix(img, 0.97, _lesion_alpha(scene, les))
    img = img * (1.0 + 0.06 * bias)
    sigma = 0.012  # magnitude of complex Gaussian noise: Rician background like a real magnitude image
    return to_uint8(np.hypot(img + sigma * noise_re, sigma * noise_im))


# ---------------------------------------------------------------------------------------------
# Chest X-ray: PA projection; brightness = attenuation (bone and heart white, lungs dark).


def _xray_sample(rng) -> dict:
    u = rng.uniform
    return dict(
        cx=0.5 + u(-0.02, 0.02),
        top=u(0.15, 0.19),
        bottom=u(0.74, 0.79),
        lung_dx=u(0.18, 0.2),
        lung_rx=u(0.13, 0.15),
        heart=u(0.13, 0.16),
        rib0=u(-0.01, 0.01),
    )


def _xray_shapes(a: dict, size: int) -> dict:
    g = _grid(size)
    yy, xx = g
    cx, top, bottom = a["cx"], a["top"], a["bottom"]
    lung_cy, lung_ry = (top + bottom) / 2, (bottom - top) / 2
    lungs = {}
    for side, sgn in (("right lung", -1), ("left lung", 1)):
        lung = _ellipse(g, size, lung_cy, cx + sgn * a["lung_dx"], lung_ry, a["lung_rx"])
        dome = _ellipse(g, size, bottom + 0.12, cx + sgn * a["lung_dx"] * 0.9, 0.17, 0.2)
        lungs[side] = lung * (1.0 - dome)
    ribs = np.zeros((size, size))
    u = (np.abs(xx - cx) - 0.04) / 0.4
    inside = (u > 0) & (u < 1)
    for i in range(9):
        y0 = top + 0.03 + a["rib0"] + i * 0.068
        centre = y0 - 0.05 * np.sin(np.pi * np.clip(u, 0, 1)) + 0.07 * np.clip(u, 0, 1)
        ribs = np.maximum(ribs, np.exp(-(((yy - centre) / 0.012) ** 2)) * inside)
    clav = np.maximum(
        _segment(g, size, (0.17, cx - 0.05), (0.12, cx - 0.3), 0.012),
        _segment(g, size, (0.17, cx + 0.05), (0.12, cx + 0.3), 0.012),
    )
    return dict(
        g=g,
        body=np.maximum(_ellipse(g, size, 0.72, cx, 0.66, 0.44), _ellipse(g, size, 0.0, cx, 0.2, 0.1)),
        lungs=lungs,
        mediastinum=_ellipse(g, size, 0.42, cx, 0.32, 0.06),
        heart=_ellipse(g, size, bottom - 0.1, cx + 0.05, a["heart"] * 0.8, a["heart"]),
        spine=np.exp(-(((xx - cx) / 0.03) ** 8)),
        ribs=ribs,
        clavicles=clav,
    )


def _xray_regions(scene: Scene) -> dict[str, np.ndarray]:
    s = _xray_shapes(scene.anatomy, scene.size)
    clear = (s["heart"] <= 0.0) & (s["mediastinum"] <= 0.0)
    return {side: (m >= 0.99) & clear for side, m in s["lungs"].items()}


def _render_xray(scene: Scene) -> np.ndarray:
    s, tex, n = _xray_shapes(scene.anatomy, scene.size), np.random.default_rng(scene.seed), scene.size
    mottle, quantum = _smooth_noise(tex, n, 0.02), tex.standard_normal((n, n))
    body = s["body"]
    att = 0.5 * body + 0.02 * mottle * body
    att = att - 0.3 * sum(s["lungs"].values())
    att = att + 0.24 * np.maximum(s["mediastinum"], s["heart"]) + 0.07 * s["spine"] * body
    att = att + 0.13 * s["ribs"] * body + 0.15 * s["clavicles"]
    att = ndimage.gaussian_filter(att, 0.4 * n / 64)  # radiographs have soft edges (focal spot)
    for les in scene.lesions:  # rounded opacity
        att = att + 0.25 * _lesion_alpha(scene, les)
    return to_uint8(0.04 + 1.1 * att + 0.012 * quantum)


# ---------------------------------------------------------------------------------------------
# Histology: one tissue layout (nuclei, stroma, lumens) rendered as H&E or as IHC (DAB).


def _histo_sample(rng) -> dict:
    return dict(density=rng.uniform(0.006, 0.009), lumens=int(rng.integers(1, 4)), fibre=rng.uniform(0, np.pi))


def _stamp(maps: list[np.ndarray], size: int, cy, cx, ry, rx, theta, value, which: int, clip=None):
    """Max-composite a soft ellipse (pixels) into maps[which]; ``clip`` multiplies it (lesion alpha)."""
    r = int(np.ceil(max(ry, rx))) + 2
    y0, y1, x0, x1 = max(int(cy) - r, 0), min(int(cy) + r + 1, size), max(int(cx) - r, 0), min(int(cx) + r + 1, size)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    c, s = np.cos(theta), np.sin(theta)
    dy, dx = yy - cy, xx - cx
    d = np.hypot((c * dy - s * dx) / ry, (s * dy + c * dx) / rx)
    blob = np.clip((1.0 - d) * min(ry, rx) + 0.5, 0.0, 1.0) * value
    if clip is not None:
        blob = blob * clip[y0:y1, x0:x1]
    maps[which][y0:y1, x0:x1] = np.maximum(maps[which][y0:y1, x0:x1], blob)


def _nuclei(rng, size: int, count: int, p_pos: float, lumens: np.ndarray, maps: list[np.ndarray]) -> None:
    """Scatter ``count`` nuclei over the tissue; negative ones go to maps[0], DAB-positive to maps[1]."""
    for _ in range(count):
        cy, cx = rng.uniform(0, size), rng.uniform(0, size)
        rad = rng.uniform(0.025, 0.034) * size
        aspect, theta = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
        value, positive = rng.uniform(0.85, 1.15), rng.random() < p_pos
        if lumens[int(cy), int(cx)] > 0.5:
            continue  # no nuclei inside gland lumens
        _stamp(maps, size, cy, cx, rad, rad * aspect, theta, value, int(positive))


def _histo_layers(scene: Scene):
    """(negative-nuclei, positive-nuclei, eosin) concentration maps of the tissue."""
    a, n, tex = scene.anatomy, scene.size, np.random.default_rng(scene.seed)
    g = _grid(n)
    lumens = np.zeros((n, n))
    for _ in range(a["lumens"]):
        ly, lx, lr = tex.uniform(0.15, 0.85), tex.uniform(0.15, 0.85), tex.uniform(0.06, 0.12)
        lumens = np.maximum(lumens, _ellipse(g, n, ly, lx, lr, lr * tex.uniform(0.6, 1.0), tex.uniform(0, np.pi)))
    yy, xx = g
    along = np.cos(a["fibre"]) * yy + np.sin(a["fibre"]) * xx
    fibres = 0.5 + 0.5 * np.sin(2 * np.pi * (along * 14 + 0.6 * _smooth_noise(tex, n, 0.08)))
    eosin = (0.55 + 0.2 * fibres + 0.08 * _smooth_noise(tex, n, 0.03)) * (1.0 - 0.9 * lumens)
    maps = [np.zeros((n, n)), np.zeros((n, n))]
    _nuclei(tex, n, int(a["density"] * n * n), 0.08, lumens, maps)
    chromatin = 1.0 + 0.15 * _smooth_noise(tex, n, 0.01)
    for i, les in enumerate(scene.lesions):  # tumour cluster: crowded, enlarged, dark, mostly positive
        alpha = _lesion_alpha(scene, les, ramp=0.15)
        rng = np.random.default_rng([scene.seed, 1000 + i])  # own stream: lesions never shift textures
        tumour = [np.zeros((n, n)), np.zeros((n, n))]
        for _ in range(int(8.0 * a["density"] * np.pi * les.r**2) + 4):
            rad, ang = les.r * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)  # uniform over the disc
            nr = rng.uniform(0.03, 0.04) * n
            _stamp(
                tumour,
                n,
                les.cy + rad * np.sin(ang),
                les.cx + rad * np.cos(ang),
                nr,
                nr * rng.uniform(0.6, 1.0),
                rng.uniform(0, np.pi),
                1.5 * rng.uniform(0.9, 1.1),
                int(rng.random() < 0.9),
                alpha,
            )
        for j in range(2):
            maps[j] = maps[j] * (1.0 - alpha) + tumour[j]
        eosin = eosin * (1.0 - 0.15 * alpha)
    return maps[0] * chromatin, maps[1] * chromatin, eosin


def _render_histology(scene: Scene, stain: str = "he", layers=None) -> np.ndarray:
    neg, pos, eosin = layers if layers is not None else _histo_layers(scene)
    if stain == "he":  # haematoxylin on every nucleus, eosin on stroma and cytoplasm
        od = (1.1 * (neg + pos))[..., None] * _HAEMATOXYLIN + (0.4 * eosin + 0.03)[..., None] * _EOSIN
    elif stain == "ihc":  # DAB (brown) on positive nuclei, haematoxylin counterstain elsewhere
        od = (
            (0.6 * neg + 0.25 * pos + 0.05)[..., None] * _HAEMATOXYLIN
            + (1.2 * pos)[..., None] * _DAB
            + 0.04 * eosin[..., None] * _DAB
        )
    else:
        raise ValueError(f"stain must be 'he' or 'ihc', got {stain!r}")
    return to_uint8(np.exp(-(od + 0.02)))


def _histo_regions(scene: Scene) -> dict[str, np.ndarray]:
    return _quadrant_masks(_grid(scene.size))


# ---------------------------------------------------------------------------------------------
# Fundus: orange retina in a black field, optic disc, macula, vessel tree from the disc.


def _fundus_sample(rng) -> dict:
    u = rng.uniform
    side = int(rng.choice([-1, 1]))  # +1: disc on the image right (a right eye)
    return dict(
        side=side,
        disc_y=0.5 + u(-0.03, 0.03),
        disc_x=0.5 + side * u(0.19, 0.23),
        disc_r=u(0.055, 0.07),
        tint=u(0.9, 1.1),
        bright=u(0.9, 1.05),
    )


def _fundus_shapes(a: dict, size: int) -> dict:
    g = _grid(size)
    mac_x = 0.5 - a["side"] * 0.04
    return dict(
        g=g,
        field=_ellipse(g, size, 0.5, 0.5, 0.46, 0.46),
        disc=_ellipse(g, size, a["disc_y"], a["disc_x"], a["disc_r"] * 1.1, a["disc_r"]),
        cup=_ellipse(g, size, a["disc_y"], a["disc_x"], a["disc_r"] * 0.5, a["disc_r"] * 0.45),
        macula=np.exp(-((np.hypot(g[0] - 0.5, g[1] - mac_x) / 0.08) ** 2)),
    )


def _vessel_maps(tex, a: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Vein and artery opacity maps, drawn at 4x and box-filtered down (anti-aliased)."""
    ss = 4
    big = size * ss
    layers = [Image.new("L", (big, big), 0), Image.new("L", (big, big), 0)]
    draws = [ImageDraw.Draw(im) for im in layers]
    temporal = -a["side"]

    def walk(kind, y, x, ang, turn, width, steps, depth):
        for step in range(steps):
            ang += turn + tex.normal(0.0, 0.12)
            ny, nx = y + 0.022 * np.sin(ang), x + 0.022 * np.cos(ang)
            w = max(width * big, 1.0)
            draws[kind].line([(x * big, y * big), (nx * big, ny * big)], fill=255, width=int(round(w)))
            draws[kind].ellipse([nx * big - w / 2, ny * big - w / 2, nx * big + w / 2, ny * big + w / 2], fill=255)
            y, x, width = ny, nx, max(width * 0.95, 0.003)
            if depth < 2 and step in (4, 9, 14):
                walk(kind, y, x, ang + tex.choice([-0.7, 0.7]), 0.0, width * 0.65, steps // 2, depth + 1)

    for up in (-1, 1):  # superior and inferior arcades curve around the macula; nasal ones are short
        base = np.arctan2(up, temporal * 0.6)
        for kind, off, width in ((0, 0.0, 0.014), (1, 0.2, 0.010)):
            walk(kind, a["disc_y"], a["disc_x"], base + off * up, -0.07 * up * temporal, width, 24, 0)
            walk(kind, a["disc_y"], a["disc_x"], np.arctan2(up, -temporal) + off, 0.0, width * 0.8, 10, 1)
    out = []
    for im in layers:
        small = resize(im, (size, size), "box")  # each pixel the mean of its block: anti-aliased
        out.append(np.asarray(small, dtype=np.float64) / 255.0)
    return out[0], out[1]


def _fundus_regions(scene: Scene) -> dict[str, np.ndarray]:
    a, n = scene.anatomy, scene.size
    s = _fundus_shapes(a, n)
    yy, xx = s["g"]
    ok = (np.hypot(yy - 0.5, xx - 0.5) < 0.42) & (np.hypot(yy - a["disc_y"], xx - a["disc_x"]) > a["disc_r"] * 1.8)
    return {q: m & ok for q, m in _quadrant_masks(s["g"]).items()}


def _render_fundus(scene: Scene) -> np.ndarray:
    a, n, tex = scene.anatomy, scene.size, np.random.default_rng(scene.seed)
    s = _fundus_shapes(a, n)
    yy, xx = s["g"]
    grain = _smooth_noise(tex, n, 0.05)
    veins, arteries = _vessel_maps(tex, a, n)
    vignette = 1.0 - 0.45 * (np.hypot(yy - 0.5, xx - 0.5) / 0.46) ** 2
    base = np.array([0.82, 0.36 * a["tint"], 0.13]) * a["bright"]
    rgb = base * (vignette * (1.0 + 0.04 * grain))[..., None]
    rgb = rgb * (1.0 - 0.35 * s["macula"])[..., None]
    rgb = _mix(_mix(rgb, [0.98, 0.8, 0.5], s["disc"]), [1.0, 0.93, 0.75], s["cup"])
    rgb = _mix(_mix(rgb, [0.45, 0.08, 0.05], veins), [0.66, 0.17, 0.08], arteries)
    for les in scene.lesions:  # hard exudate: bright yellow
        rgb = _mix(rgb, [0.97, 0.88, 0.4], 0.95 * _lesion_alpha(scene, les, ramp=0.5))
    return to_uint8(rgb * s["field"][..., None])


# ---------------------------------------------------------------------------------------------
# Public API.

_SAMPLERS = {
    "ct": _ct_sample,
    "mri": _mri_sample,
    "x-ray": _xray_sample,
    "histology": _histo_sample,
    "fundus": _fundus_sample,
}
_REGION_MASKS = {
    "ct": _ct_regions,
    "mri": _mri_regions,
    "x-ray": _xray_regions,
    "histology": _histo_regions,
    "fundus": _fundus_regions,
}
_RENDERERS = {
    "ct": _render_ct,
    "mri": _render_mri,
    "x-ray": _render_xray,
    "histology": _render_histology,
    "fundus": _render_fundus,
}


def region_masks(scene: Scene) -> dict[str, np.ndarray]:
    """Boolean (H, W) mask per named region where a lesion of this modality may lie."""
    return _REGION_MASKS[scene.modality](scene)


def make_scene(
    modality: str, size: int, rng: np.random.Generator, n_lesions: int = 0, regions: list[str] | None = None
) -> Scene:
    """A random scene of ``modality`` with ``n_lesions`` non-overlapping lesions inside their regions.

    ``regions`` (one per lesion) fixes where each lesion goes. Otherwise each lesion draws a region
    and, when it does not fit there (a lung holds two lesions of the design-rule size, not three),
    takes the first other region with room, in an order drawn from ``rng``. A large lesion that fits
    nowhere becomes a small one; radii never go below :data:`LESION_MIN_RADIUS` of the side. When
    the lesions placed first leave no room for the next, the whole layout is drawn again.
    """
    if modality not in _SAMPLERS:
        raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    scene = Scene(modality, size, _SAMPLERS[modality](rng), int(rng.integers(2**31)))
    masks = region_masks(scene)
    for _ in range(_LAYOUT_ATTEMPTS):
        lesions = _place_lesions(scene, masks, n_lesions, regions, rng)
        if lesions is not None:
            return replace(scene, lesions=tuple(lesions))
    raise RuntimeError(
        f"could not place {n_lesions} lesions in a {size}px {modality} scene (regions {regions or REGIONS[modality]})"
    )


_LAYOUT_ATTEMPTS = 50


def _place_lesions(
    scene: Scene, masks: dict[str, np.ndarray], n_lesions: int, regions: list[str] | None, rng: np.random.Generator
) -> list[Lesion] | None:
    """One random layout of ``n_lesions`` lesions (see :func:`make_scene`), or None when one did not fit."""
    scale = _LESION_SCALE.get(scene.modality, 1.0)
    lesions: list[Lesion] = []
    for i in range(n_lesions):
        label = str(rng.choice(list(LESION_SIZES)))
        if regions:
            order = [regions[i]]
        else:
            first = str(rng.choice(REGIONS[scene.modality]))
            others = [r for r in REGIONS[scene.modality] if r != first]
            order = [first] + [others[k] for k in rng.permutation(len(others))]
        placed = None
        for size_label in dict.fromkeys([label, "small"]):  # large first when drawn, then small
            r = rng.uniform(*LESION_SIZES[size_label]) * scene.size * scale
            for region in order:
                spot = _free_spot(masks[region], scene.size, r, lesions, rng)
                if spot is not None:
                    placed = Lesion(region, spot[0], spot[1], float(r), size_label)
                    break
            if placed is not None:
                break
        if placed is None:
            return None
        lesions.append(placed)
    return lesions


def _free_spot(
    region: np.ndarray, size: int, r: float, lesions: list[Lesion], rng: np.random.Generator
) -> tuple[float, float] | None:
    """A random centre (y, x) whose disc of radius ``r`` lies in ``region``, apart from ``lesions``."""
    room = region.copy()
    room[[0, -1], :] = False  # discs stay off the border
    room[:, [0, -1]] = False
    valid = ndimage.distance_transform_edt(room) > r + 0.5  # the whole disc lies in the region
    for les in lesions:  # keep discs apart so each stays countable
        valid &= _pixel_dist(size, les.cy, les.cx) > r + les.r + 2.0
    candidates = np.flatnonzero(valid)
    if not candidates.size:
        return None
    cy, cx = divmod(int(candidates[rng.integers(candidates.size)]), size)
    return cy + 0.5, cx + 0.5


def render(scene: Scene, stain: str = "he") -> np.ndarray:
    """The scene's image as uint8; ``stain`` ('he' or 'ihc') only matters for histology."""
    if scene.modality == "histology":
        return _render_histology(scene, stain)
    return _RENDERERS[scene.modality](scene)


def render_stain_pair(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(H&E, IHC) renderings of one histology scene: the same tissue layout in both stains."""
    if scene.modality != "histology":
        raise ValueError(f"stain pairs need a histology scene, got {scene.modality!r}")
    layers = _histo_layers(scene)
    return _render_histology(scene, "he", layers), _render_histology(scene, "ihc", layers)
