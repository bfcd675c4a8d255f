"""Evaluation metrics: paired image quality, VQA / multiple choice, report text, FID.

Image metrics come in two modes (spec medical.md section 5):
- ``reference``: comparable with published numbers. Both images become uint8 RGB; when sizes
  differ the ground truth is resized (PIL bicubic) to the prediction's size; PSNR =
  20*log10(255/sqrt(MSE)); SSIM is the mean over the R, G, B channels of scikit-image's default
  SSIM (7x7 uniform window, sample covariance, K1=0.01, K2=0.03, data_range 255).
- ``native``: at the ground truth's size and on its own intensity scale (e.g. HU for CT): the
  prediction is resized to the ground truth, ``data_range`` is that of the scale.
The mode is written next to the numbers (``metric_mode``) so the two are never mixed up.

Report metrics share one tokenisation (`tokenize`: lowercase, runs of [a-z0-9]) so BLEU,
ROUGE-L, METEOR and CIDEr-D see the same words. METEOR here is ``meteor_exact``: exact unigram
matches only, because the WordNet synonyms and stems of full METEOR need data that is not
available offline; it usually scores below full METEOR and must be reported under its own
name.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
from PIL import Image
from scipy import linalg
from scipy.ndimage import uniform_filter

from unimedvl.errors import ConfigError, DataError

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]
METRIC_MODES = ("reference", "native")


# ---------------------------------------------------------------------------------------------
# Aggregation


def mean_std_finite(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population std (ddof=0) over the finite values; (None, None) if there are none.

    None, NaN and +-inf (a PSNR of identical images) are left out, as the reference does.
    """
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None, None
    return float(arr.mean()), float(arr.std())


# ---------------------------------------------------------------------------------------------
# Paired image metrics


def _load(img: ImageLike) -> Image.Image | np.ndarray:
    if isinstance(img, (str, os.PathLike)):
        path = Path(img)
        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        if path.suffix == ".npy":
            return np.load(path)
        with Image.open(path) as im:
            im.load()
            return im
    if isinstance(img, (Image.Image, np.ndarray)):
        return img
    raise DataError(f"expected a PIL image, numpy array or path, got {type(img).__name__}")


def to_rgb_uint8(img: ImageLike) -> np.ndarray:
    """An image as an (H, W, 3) uint8 array (grayscale is replicated, alpha dropped)."""
    img = _load(img)
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise DataError(
                f"reference-mode metrics take uint8 images (0..255), got dtype {img.dtype}; "
                "convert to uint8, or use mode='native' with data_range for other scales"
            )
        img = Image.fromarray(img.squeeze(-1) if img.ndim == 3 and img.shape[-1] == 1 else img)
    return np.asarray(img.convert("RGB"))


def _resize_bicubic(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL bicubic resize: uint8 stays uint8 (as the reference does), other dtypes via float32."""
    if arr.shape[:2] == (height, width):
        return arr
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.BICUBIC))
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = [
        np.asarray(
            Image.fromarray(chans[..., c].astype(np.float32)).resize(
                (width, height), Image.Resampling.BICUBIC
            )
        )
        for c in range(chans.shape[-1])
    ]
    res = np.stack(out, axis=-1).astype(np.float64)
    return res[..., 0] if arr.ndim == 2 else res


def psnr(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    """PSNR in dB = 20*log10(data_range/sqrt(MSE)); +inf for identical images."""
    if pred.shape != gt.shape:
        raise DataError(f"psnr: shapes differ {pred.shape} vs {gt.shape}")
    mse = float(np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 20.0 * math.log10(data_range / math.sqrt(mse))


def ssim(pred: np.ndarray, gt: np.ndarray, data_range: float, win_size: int = 7) -> float:
    """Mean SSIM with a uniform window (scikit-image's default); (H, W, C) averages channels.

    Local statistics use a ``win_size``^2 box filter (reflect padding), variances with the sample
    (N-1) normalisation, C1=(0.01 L)^2, C2=(0.03 L)^2; the border of (win_size-1)//2 pixels is
    left out of the mean.
    """
    if pred.shape != gt.shape:
        raise DataError(f"ssim: shapes differ {pred.shape} vs {gt.shape}")
    if min(pred.shape[:2]) < win_size:
        raise DataError(f"ssim: image {pred.shape[:2]} is smaller than the {win_size}px window")
    if pred.ndim == 3:
        return float(np.mean([ssim(pred[..., c], gt[..., c], data_range, win_size)
                              for c in range(pred.shape[-1])]))
    x, y = pred.astype(np.float64), gt.astype(np.float64)
    n = win_size * win_size
    cov_norm = n / (n - 1)
    mx, my = uniform_filter(x, win_size), uniform_filter(y, win_size)
    vx = cov_norm * (uniform_filter(x * x, win_size) - mx * mx)
    vy = cov_norm * (uniform_filter(y * y, win_size) - my * my)
    vxy = cov_norm * (uniform_filter(x * y, win_size) - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(smap[pad:-pad, pad:-pad].mean()) if pad else float(smap.mean())


def ms_ssim(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    """Multi-scale SSIM (5 scales, 11px Gaussian window, sigma 1.5) via pytorch-msssim."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    if pred.shape != gt.shape:
        raise DataError(f"ms_ssim: shapes differ {pred.shape} vs {gt.shape}")
    if min(pred.shape[:2]) <= 160:
        raise DataError(f"ms_ssim needs images larger than 160px a side (5 scales of an 11px "
                        f"window); got {pred.shape[:2]}: report SSIM instead")

    def to_t(a: np.ndarray) -> "torch.Tensor":
        t = torch.from_numpy(a.astype(np.float64))
        return (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]).contiguous()

    return float(_ms_ssim(to_t(pred), to_t(gt), data_range=data_range))


def rescale_intensity(img: ImageLike, low: float, high: float) -> np.ndarray:
    """Map a uint8 image (0..255, gray or RGB -> gray) linearly onto [low, high], e.g. HU.

    Use it to bring a generated PNG back to the scale of a native ground truth that was
    windowed to [low, high] for display.
    """
    arr = to_rgb_uint8(img).astype(np.float64).mean(axis=-1)
    return low + (high - low) * arr / 255.0


def _native_array(img: ImageLike) -> np.ndarray:
    img = _load(img)
    return np.asarray(img) if isinstance(img, Image.Image) else img


def paired_image_metrics(pred: ImageLike, gt: ImageLike, *, mode: str = "reference",
                         data_range: float | None = None,
                         with_ms_ssim: bool = False) -> dict[str, Any]:
    """PSNR / SSIM (optionally MS-SSIM) of a prediction against its ground truth.

    Returns {"psnr", "ssim", ["ms_ssim"], "metric_mode", "data_range", "height", "width"}
    where height/width are the size the metrics were computed at.
    """
    if mode == "reference":
        if data_range not in (None, 255, 255.0):
            raise ConfigError(f"reference mode uses data_range 255 (got {data_range}); "
                              "use mode='native' for another intensity scale")
        p, g = to_rgb_uint8(pred), to_rgb_uint8(gt)
        g = _resize_bicubic(g, *p.shape[:2])  # ground truth goes to the prediction's size
        rng = 255.0
    elif mode == "native":
        p, g = _native_array(pred), _native_array(gt)
        if p.ndim != g.ndim or (p.ndim == 3 and p.shape[-1] != g.shape[-1]):
            raise DataError(f"native mode: channel layouts differ (pred {p.shape}, gt {g.shape}); "
                            "bring the prediction to the ground truth's scale first "
                            "(e.g. rescale_intensity)")
        if data_range is None:
            if not np.issubdtype(g.dtype, np.integer):
                raise ConfigError("native mode on a float image needs data_range "
                                  "(e.g. the HU window width for CT)")
            info = np.iinfo(g.dtype)
            data_range = float(info.max) - float(info.min)
        rng = float(data_range)
        p = _resize_bicubic(p, *g.shape[:2]).astype(np.float64)  # prediction to the GT's size
        g = g.astype(np.float64)
    else:
        raise ConfigError(f"unknown metric mode {mode!r}; choose one of {METRIC_MODES}")
    out: dict[str, Any] = {"psnr": psnr(p, g, rng), "ssim": ssim(p, g, rng)}
    if with_ms_ssim:
        out["ms_ssim"] = ms_ssim(p, g, rng)
    out.update(metric_mode=mode, data_range=rng, height=int(g.shape[0]), width=int(g.shape[1]))
    return out


# ---------------------------------------------------------------------------------------------
# VQA and multiple choice

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({w: str(10 * i) for i, w in enumerate(
    "thirty forty fifty sixty seventy eighty ninety".split(), start=3)})
_NUMBER_WORDS["hundred"] = "100"
_ARTICLES = {"a", "an", "the"}
_YES = {"yes", "yeah", "yep", "yup", "true", "correct", "affirmative"}
_NO = {"no", "nope", "false", "incorrect", "negative"}


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation (keeping 1,000 and 2.5 intact) and articles, words -> digits."""
    s = str(text).lower().strip()
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)
    s = re.sub(r"[^\w\s.]|_", " ", s)
    return " ".join(_NUMBER_WORDS.get(t, t) for t in s.split() if t not in _ARTICLES)


def yes_no(text: str) -> str | None:
    """'yes' / 'no' when the answer starts with a yes/no word ("Yes, there is ..."), else None."""
    tokens = normalize_answer(text).split()
    if not tokens:
        return None
    return "yes" if tokens[0] in _YES else "no" if tokens[0] in _NO else None


def closed_correct(pred: str, gt: str) -> bool:
    """Closed-question match: yes/no by the answer's first word, otherwise normalised equality."""
    g = normalize_answer(gt)
    if g in ("yes", "no"):
        return yes_no(pred) == g
    return normalize_answer(pred) == g


def open_recall(pred: str, gt: str) -> float:
    """Fraction of the distinct ground-truth tokens that occur in the prediction."""
    g, p = set(normalize_answer(gt).split()), set(normalize_answer(pred).split())
    if not g:
        return float(not p)
    return len(g & p) / len(g)


def exact_match(pred: str, gt: str) -> bool:
    """Equality after `normalize_answer`."""
    return normalize_answer(pred) == normalize_answer(gt)


def vqa_scores(preds: Sequence[str], gts: Sequence[str],
               answer_types: Sequence[str | None] | None = None) -> dict[str, float | int | None]:
    """VQA-RAD / SLAKE / PathVQA style scores.

    answer_types: "closed" / "open" per question (case-insensitive); None infers closed when the
    ground truth is yes/no. Returns closed_accuracy, open_recall, open_exact_match and counts
    (a score is None when its question set is empty).
    """
    if len(preds) != len(gts):
        raise DataError(f"vqa_scores: {len(preds)} predictions for {len(gts)} answers")
    types = answer_types if answer_types is not None else [None] * len(gts)
    closed, recall, em = [], [], []
    for p, g, t in zip(preds, gts, types):
        kind = (t or ("closed" if normalize_answer(g) in ("yes", "no") else "open")).lower()
        if kind == "closed":
            closed.append(closed_correct(p, g))
        elif kind == "open":
            recall.append(open_recall(p, g))
            em.append(exact_match(p, g))
        else:
            raise DataError(f"answer type {t!r}: use 'closed' or 'open'")

    def mean(xs: list) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {"closed_accuracy": mean(closed), "closed_count": len(closed),
            "open_recall": mean(recall), "open_exact_match": mean(em), "open_count": len(recall)}


def _option_map(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(options, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in options.items()}
    return {chr(ord("A") + i): str(v) for i, v in enumerate(options)}


# group 1: the letter; group 2: a following word, to tell "answer is a mass" from "answer is a"
_ANSWER_IS = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*(?:option\s*)?"
                        r"\(?([A-Za-z])\)?(?![A-Za-z])(\s+[a-z])?", re.IGNORECASE)
_LEADING = re.compile(r"^\s*\(?([A-Za-z])(?:\s*[).:,]|\)?\s*$)")
_PAREN = re.compile(r"\(([A-Z])\)")


def extract_choice(text: str, options: Mapping[str, str] | Sequence[str]) -> str | None:
    """The option letter an answer picks, or None.

    Tried in order: "answer is b" / "Answer: (B)" / "option B"; a leading "(B)", "B.", "B)",
    "B:" or a bare "B"; "(B)" anywhere; finally the option text itself (equal after
    normalisation, else the only option whose text occurs in the answer, longest wins).
    """
    opts = _option_map(options)
    for m in _ANSWER_IS.finditer(text):
        letter = m.group(1)
        # "the answer is a large mass": a lowercase article/pronoun followed by a word is no letter
        if letter in ("a", "i") and m.group(2):
            continue
        if letter.upper() in opts:
            return letter.upper()
    for pat in (_LEADING, _PAREN):
        m = pat.search(text)
        if m and m.group(1).upper() in opts:
            return m.group(1).upper()
    norm = normalize_answer(text)
    norm_opts = {k: normalize_answer(v) for k, v in opts.items() if normalize_answer(v)}
    equal = [k for k, v in norm_opts.items() if v == norm]
    if len(equal) == 1:
        return equal[0]
    found = [k for k, v in norm_opts.items() if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", norm)]
    if not found:
        return None
    longest = max(len(norm_opts[k]) for k in found)
    best = [k for k in found if len(norm_opts[k]) == longest]
    return best[0] if len(best) == 1 else None


def multiple_choice_accuracy(preds: Sequence[str], answers: Sequence[str],
                             options: Sequence[Mapping[str, str] | Sequence[str]]) -> float:
    """Accuracy of `extract_choice` against answer letters (an unparseable answer is wrong)."""
    if not (len(preds) == len(answers) == len(options)) or not preds:
        raise DataError(f"multiple_choice_accuracy: {len(preds)} predictions, {len(answers)} "
                        f"answers, {len(options)} option sets (must be equal and non-empty)")
    hits = [extract_choice(p, o) == a.strip().strip("()").upper()
            for p, a, o in zip(preds, answers, options)]
    return float(np.mean(hits))


# ---------------------------------------------------------------------------------------------
# Report generation metrics (corpus level)

RefsLike = Sequence[Union[str, Sequence[str]]]


def tokenize(text: str) -> list[str]:
    """Report tokens: lowercase runs of [a-z0-9] (rouge-score's default tokeniser, no stemming)."""
    return re.findall(r"[a-z0-9]+", str(text).lower())


def _prep(hyps: Sequence[str], refs: RefsLike) -> tuple[list[list[str]], list[list[list[str]]]]:
    if len(hyps) != len(refs) or not hyps:
        raise DataError(f"{len(hyps)} hypotheses for {len(refs)} reference sets "
                        "(must be equal and non-empty)")
    ref_sets = [[r] if isinstance(r, str) else list(r) for r in refs]
    if any(not rs for rs in ref_sets):
        raise DataError("every hypothesis needs at least one reference")
    return [tokenize(h) for h in hyps], [[tokenize(r) for r in rs] for rs in ref_sets]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hyps: Sequence[str], refs: RefsLike, max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..max_n (Papineni et al.), no smoothing: {"bleu_1": ..., "bleu_4": ...}.

    Clipped n-gram counts and lengths are summed over the corpus; the brevity penalty uses the
    reference length closest to each hypothesis (the shorter on ties). A zero precision at any
    order up to n gives BLEU-n = 0.
    """
    hyp_toks, ref_toks = _prep(hyps, refs)
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for h, rs in zip(hyp_toks, ref_toks):
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(h, n)
            max_ref: Counter = Counter()
            for r in rs:
                max_ref |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(0, len(h) - n + 1)
    if hyp_len == 0:
        bp = 0.0
    else:
        bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    out = {}
    for n in range(1, max_n + 1):
        if any(m == 0 for m in matches[:n]):
            out[f"bleu_{n}"] = 0.0
            continue
        logp = sum(math.log(matches[k] / max(1, totals[k])) for k in range(n)) / n
        out[f"bleu_{n}"] = bp * math.exp(logp)
    return out


def _lcs_len(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyps: Sequence[str], refs: RefsLike) -> float:
    """Mean over samples of the ROUGE-L F1 (LCS based, beta=1); best reference per sample."""
    hyp_toks, ref_toks = _prep(hyps, refs)
    scores = []
    for h, rs in zip(hyp_toks, ref_toks):
        best = 0.0
        for r in rs:
            lcs = _lcs_len(h, r)
            if lcs:
                p, rec = lcs / len(h), lcs / len(r)
                best = max(best, 2 * p * rec / (p + rec))
        scores.append(best)
    return float(np.mean(scores))


def _align_exact(h: list[str], r: list[str]) -> list[tuple[int, int]]:
    """Exact-match alignment (hyp index, ref index), sorted by hyp index.

    Greedy tiling: take the longest common contiguous run of still-free words first (ties: the
    earliest in the hypothesis, then in the reference); a run that hits taken words is split into
    its free pieces and queued again. Every word that can match does (maximal matches) and
    shared phrases stay whole, which keeps the number of chunks low.
    """
    queue = []
    for i in range(len(h)):
        for j in range(len(r)):
            if h[i] == r[j] and (i == 0 or j == 0 or h[i - 1] != r[j - 1]):
                k = 1
                while i + k < len(h) and j + k < len(r) and h[i + k] == r[j + k]:
                    k += 1
                queue.append((-k, i, j))
    heapq.heapify(queue)
    used_h, used_r = [False] * len(h), [False] * len(r)
    pairs = []
    while queue:
        neg_k, i, j = heapq.heappop(queue)
        free = [not used_h[i + t] and not used_r[j + t] for t in range(-neg_k)]
        if all(free):
            for t in range(-neg_k):
                used_h[i + t] = used_r[j + t] = True
                pairs.append((i + t, j + t))
            continue
        t = 0
        while t < len(free):  # queue the free pieces of a run that overlaps taken words
            if free[t]:
                start = t
                while t < len(free) and free[t]:
                    t += 1
                heapq.heappush(queue, (-(t - start), i + start, j + start))
            t += 1
    return sorted(pairs)


def _meteor_exact_pair(h: list[str], r: list[str], alpha: float, beta: float,
                       gamma: float) -> float:
    pairs = _align_exact(h, r)
    m = len(pairs)
    if m == 0:
        return 0.0
    # a chunk is a run of matches that are adjacent in both sentences
    chunks = 1 + sum(1 for (a, b), (c, d) in zip(pairs, pairs[1:]) if (c, d) != (a + 1, b + 1))
    p, rec = m / len(h), m / len(r)
    fmean = p * rec / (alpha * p + (1 - alpha) * rec)
    return fmean * (1.0 - gamma * (chunks / m) ** beta)


def meteor_exact(hyps: Sequence[str], refs: RefsLike, alpha: float = 0.9, beta: float = 3.0,
                 gamma: float = 0.5) -> float:
    """METEOR restricted to exact unigram matches (no stems/synonyms: WordNet is not offline).

    Fmean = P*R / (alpha*P + (1-alpha)*R), penalty = gamma*(chunks/matches)^beta, score =
    Fmean*(1-penalty); best reference per sample; mean over samples. Not comparable with full
    METEOR, which also matches stems and synonyms (and so usually scores higher).
    """
    hyp_toks, ref_toks = _prep(hyps, refs)
    return float(np.mean([max(_meteor_exact_pair(h, r, alpha, beta, gamma) for r in rs)
                          for h, rs in zip(hyp_toks, ref_toks)]))


def cider_d(hyps: Sequence[str], refs: RefsLike, sigma: float = 6.0,
            max_n: int = 4) -> tuple[float, list[float]]:
    """CIDEr-D (Vedantam et al. 2015): corpus score and per-sample scores.

    For n = 1..4 each sentence is a vector of n-gram count x idf, idf = log(N / max(1, df)) with
    N the number of samples and df the number of samples whose references contain the n-gram.
    Per reference: sum_k min(c_k, r_k) * r_k / (|c| |r|) (candidate counts clipped to the
    reference), times exp(-(len_c - len_r)^2 / (2 sigma^2)); averaged over references, then
    over n, times 10. A zero vector scores 0. With N = 1 every idf is 0, so the score is 0.
    """
    hyp_toks, ref_toks = _prep(hyps, refs)
    n_docs = len(hyp_toks)
    df: Counter = Counter()
    for rs in ref_toks:
        df.update({g for r in rs for n in range(1, max_n + 1) for g in _ngrams(r, n)})

    def vectors(tokens: list[str]) -> list[tuple[dict, float]]:
        out = []
        for n in range(1, max_n + 1):
            vec = {g: c * math.log(n_docs / max(1.0, df[g])) for g, c in _ngrams(tokens, n).items()}
            out.append((vec, math.sqrt(sum(v * v for v in vec.values()))))
        return out

    scores = []
    for h, rs in zip(hyp_toks, ref_toks):
        hv = vectors(h)
        per_n = np.zeros(max_n)
        for r in rs:
            rv = vectors(r)
            penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma ** 2))
            for n, ((cvec, cnorm), (rvec, rnorm)) in enumerate(zip(hv, rv)):
                if cnorm and rnorm:
                    dot = sum(min(c, rvec[g]) * rvec[g] for g, c in cvec.items() if g in rvec)
                    per_n[n] += penalty * dot / (cnorm * rnorm)
        scores.append(float(10.0 * per_n.mean() / len(rs)))
    return float(np.mean(scores)), scores


def report_metrics(hyps: Sequence[str], refs: RefsLike) -> dict[str, float]:
    """All report-generation metrics: bleu_1..4, rouge_l, meteor_exact, cider_d."""
    out: dict[str, float] = dict(corpus_bleu(hyps, refs))
    out["rouge_l"] = rouge_l(hyps, refs)
    out["meteor_exact"] = meteor_exact(hyps, refs)
    out["cider_d"] = cider_d(hyps, refs)[0]
    return out


# ---------------------------------------------------------------------------------------------
# FID


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise DataError(f"frechet_distance: feature sizes differ ({mu1.shape} vs {mu2.shape})")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise both covariances
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DataError(f"frechet_distance: sqrtm has a large imaginary part "
                            f"({np.abs(covmean.imag).max():.3g}); use more samples")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"FID needs at least 2 feature vectors of shape (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between two feature sets."""
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))


@dataclass
class FeatureExtractor:
    """A module mapping (N, 3, H, W) float images in [0, 1] to (N, D) features, with its name.

    input_size (H, W) resizes images (bilinear) before the module; None keeps them as they are.
    metric is the name the FID gets in outputs ("fid" for a loaded extractor).
    """

    name: str
    module: Callable[..., Any]
    input_size: tuple[int, int] | None = None
    metric: str = "fid"

    def __call__(self, batch: "torch.Tensor") -> np.ndarray:  # noqa: F821
        import torch
        import torch.nn.functional as F

        if self.input_size is not None and tuple(batch.shape[-2:]) != tuple(self.input_size):
            batch = F.interpolate(batch, size=self.input_size, mode="bilinear",
                                  align_corners=False, antialias=True)
        with torch.no_grad():
            out = self.module(batch)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.reshape(out.shape[0], -1).double().cpu().numpy()


class _PixelStats:
    """Not a learned feature: a 4x4 colour thumbnail plus per-channel mean and std (54 dims)."""

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        import torch
        import torch.nn.functional as F

        thumb = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([thumb, x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def pixelstats_extractor() -> FeatureExtractor:
    """The built-in toy extractor; its score is labelled "fid_pixelstats", never plain FID."""
    return FeatureExtractor(name="pixelstats-4x4", module=_PixelStats(), metric="fid_pixelstats")


def load_feature_extractor(path: str | os.PathLike, module_spec: str | None = None,
                           input_size: tuple[int, int] | None = None,
                           name: str | None = None) -> FeatureExtractor:
    """Load a FID feature extractor from a local file (never downloaded).

    A TorchScript file (.pt / .pth / .ts) or a torch.export program (.pt2) is loaded as is (give
    the .pt2 a dynamic batch dimension, or use batch_size=1). A .safetensors file needs
    module_spec "package.module:factory" (a class or function returning the nn.Module) whose
    state dict it fills strictly. The recorded name is ``name`` or "<file name>@<sha256[:12]>".
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: feature extractor file not found (FID weights are never "
                          "downloaded; give a local TorchScript or safetensors file)")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    if p.suffix == ".safetensors":
        if not module_spec or ":" not in module_spec:
            raise ConfigError(f"{p}: a safetensors extractor needs module_spec "
                              "'package.module:factory' naming the module to build")
        import importlib

        from safetensors.torch import load_file

        mod_name, attr = module_spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"module_spec {module_spec!r}: {e}") from e
        module = factory()
        try:
            module.load_state_dict(load_file(str(p)), strict=True)
        except RuntimeError as e:
            raise ConfigError(f"{p}: weights do not fit {module_spec}: {e}") from e
    elif p.suffix == ".pt2":  # torch.export.save of an ExportedProgram
        module = torch.export.load(str(p)).module()
    else:
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except RuntimeError as e:
            raise ConfigError(f"{p}: not a TorchScript file ({e}); for a state dict use "
                              ".safetensors with module_spec") from e
    if p.suffix != ".pt2":  # exported programs are already in inference form and refuse eval()
        module.eval()
    return FeatureExtractor(name=name or f"{p.name}@{digest}", module=module,
                            input_size=input_size)


def _image_tensor(img: ImageLike) -> "torch.Tensor":  # noqa: F821
    import torch

    return torch.from_numpy(to_rgb_uint8(img).copy()).permute(2, 0, 1).float() / 255.0


def _resize_tensor(t: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":  # noqa: F821
    """Resize one (3, H, W) image to size with antialiased bilinear interpolation."""
    import torch.nn.functional as F

    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def extract_features(images: Sequence[ImageLike], extractor: FeatureExtractor,
                     batch_size: int = 32) -> np.ndarray:
    """(N, D) features of uint8 images; images of different sizes go through one at a time."""
    import torch

    feats, batch = [], []

    def flush() -> None:
        if batch:
            feats.append(extractor(torch.stack(batch)))
            batch.clear()

    for img in images:
        t = _image_tensor(img)
        if extractor.input_size is not None:
            t = _resize_tensor(t, extractor.input_size)
        if batch and (batch[0].shape != t.shape or len(batch) == batch_size):
            flush()
        batch.append(t)
    flush()
    if not feats:
        raise DataError("extract_features: no images")
    return np.concatenate(feats)


def compute_fid(images_a: Sequence[ImageLike], images_b: Sequence[ImageLike],
                extractor: FeatureExtractor | None = None) -> dict[str, Any]:
    """FID-style distance between two image sets, labelled with the extractor that made it.

    Returns {"metric", "value", "feature_extractor", "num_a", "num_b"}; with no extractor the
    built-in pixel statistics are used and metric is "fid_pixelstats" (not standard FID).
    """
    ext = extractor or pixelstats_extractor()
    fa, fb = extract_features(images_a, ext), extract_features(images_b, ext)
    return {"metric": ext.metric, "value": fid_from_features(fa, fb),
            "feature_extractor": ext.name, "num_a": len(fa), "num_b": len(fb)}
