"""Text metrics: VQA (closed / open answers), multiple choice, and report generation.

Report metrics share one tokenisation (`tokenize`: lowercase, runs of [a-z0-9]) so BLEU,
ROUGE-L, METEOR and CIDEr-D see the same words. METEOR here is ``meteor_exact``: exact unigram
matches only, because the WordNet synonyms and stems of full METEOR need data that is not
available offline; it usually scores below full METEOR and must be reported under its own
name.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from unimedvl.errors import DataError

# ---------------------------------------------------------------------------------------------
# VQA and multiple choice

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update(
    {w: str(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), start=3)}
)
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


# Chinese yes/no (SLAKE zh answers 是 / 否): the longer spellings first, so that 不是 reads as no.
_ZH_NO = ("不是", "不对", "没有", "否", "不", "无")
_ZH_YES = ("是的", "是", "对", "有")


def yes_no(text: str) -> str | None:
    """'yes' / 'no' when the answer starts with a yes/no word ("Yes, there is ...", "是的", "不是"), else None."""
    tokens = normalize_answer(text).split()
    if not tokens:
        return None
    first = tokens[0]
    if first in _YES or first in _NO:
        return "yes" if first in _YES else "no"
    for words, value in ((_ZH_NO, "no"), (_ZH_YES, "yes")):
        if any(first.startswith(w) for w in words):
            return value
    return None


def yes_no_word(gt: str) -> str | None:
    """'yes' / 'no' when a gold answer is exactly a yes/no word (English, or 是 / 否 and their variants)."""
    g = normalize_answer(gt)
    if g in ("yes", "no"):
        return g
    return "yes" if g in _ZH_YES else "no" if g in _ZH_NO else None


def closed_correct(pred: str, gt: str) -> bool:
    """Closed-question match: yes/no by the answer's first word, otherwise normalised equality."""
    g = yes_no_word(gt)
    if g is not None:
        return yes_no(pred) == g
    return normalize_answer(pred) == normalize_answer(gt)


def open_recall(pred: str, gt: str) -> float:
    """Fraction of the distinct ground-truth tokens that occur in the prediction."""
    g, p = set(normalize_answer(gt).split()), set(normalize_answer(pred).split())
    if not g:
        return float(not p)
    return len(g & p) / len(g)


def exact_match(pred: str, gt: str) -> bool:
    """Equality after `normalize_answer`."""
    return normalize_answer(pred) == normalize_answer(gt)


def vqa_scores(
    preds: Sequence[str], gts: Sequence[str], answer_types: Sequence[str | None] | None = None
) -> dict[str, float | int | None]:
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

    return {
        "closed_accuracy": mean(closed),
        "closed_count": len(closed),
        "open_recall": mean(recall),
        "open_exact_match": mean(em),
        "open_count": len(recall),
    }


def _option_map(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(options, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in options.items()}
    return {chr(ord("A") + i): str(v) for i, v in enumerate(options)}


# group 1: the letter; group 2: a following word, to tell "answer is a mass" from "answer is a"
_ANSWER_IS = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*(?:option\s*)?"
    r"\(?([A-Za-z])\)?(?![A-Za-z])(\s+[a-z])?",
    re.IGNORECASE,
)
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


def multiple_choice_accuracy(
    preds: Sequence[str], answers: Sequence[str], options: Sequence[Mapping[str, str] | Sequence[str]]
) -> float:
    """Accuracy of `extract_choice` against answer letters (an unparseable answer is wrong)."""
    if not (len(preds) == len(answers) == len(options)) or not preds:
        raise DataError(
            f"multiple_choice_accuracy: {len(preds)} predictions, {len(answers)} "
            f"answers, {len(options)} option sets (must be equal and non-empty)"
        )
    hits = [extract_choice(p, o) == a.strip().strip("()").upper() for p, a, o in zip(preds, answers, options)]
    return float(np.mean(hits))


# ---------------------------------------------------------------------------------------------
# Report generation metrics (corpus level)

RefsLike = Sequence[str | Sequence[str]]


def tokenize(text: str) -> list[str]:
    """Report tokens: lowercase runs of [a-z0-9] (rouge-score's default tokeniser, no stemming)."""
    return re.findall(r"[a-z0-9]+", str(text).lower())


def _prep(hyps: Sequence[str], refs: RefsLike) -> tuple[list[list[str]], list[list[list[str]]]]:
    if len(hyps) != len(refs) or not hyps:
        raise DataError(f"{len(hyps)} hypotheses for {len(refs)} reference sets (must be equal and non-empty)")
    ref_sets = [[r] if isinstance(r, str) else list(r) for r in refs]
    if any(not rs for rs in ref_sets):
        raise DataError("every hypothesis needs at least one reference")
    return [tokenize(h) for h in hyps], [[tokenize(r) for r in rs] for rs in ref_sets]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_statistics(hyps: Sequence[str], refs: RefsLike, max_n: int = 4) -> np.ndarray:
    """Per-sample BLEU sufficient statistics, (n samples, 2 * max_n + 2): clipped n-gram matches for
    n = 1..max_n, n-gram totals, hypothesis length, closest reference length (the shorter on ties).

    Corpus BLEU is :func:`bleu_from_statistics` of their column sums, which is how a bootstrap
    resamples it (:func:`unimedvl.metrics.uncertainty.bootstrap_ci_of_sums`).
    """
    hyp_toks, ref_toks = _prep(hyps, refs)
    rows = np.zeros((len(hyp_toks), 2 * max_n + 2))
    for i, (h, rs) in enumerate(zip(hyp_toks, ref_toks)):
        rows[i, 2 * max_n] = len(h)
        rows[i, 2 * max_n + 1] = min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(h, n)
            max_ref: Counter = Counter()
            for r in rs:
                max_ref |= _ngrams(r, n)
            rows[i, n - 1] = sum(min(c, max_ref[g]) for g, c in counts.items())
            rows[i, max_n + n - 1] = max(0, len(h) - n + 1)
    return rows


def bleu_from_statistics(sums: np.ndarray, n: int, max_n: int = 4) -> np.ndarray:
    """BLEU-n of summed :func:`bleu_statistics` rows; ``sums``: (k,) or (m, k), result () or (m,)."""
    sums = np.asarray(sums, dtype=np.float64)
    matches, totals = sums[..., :n], np.maximum(1.0, sums[..., max_n : max_n + n])
    hyp_len, ref_len = sums[..., 2 * max_n], sums[..., 2 * max_n + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(hyp_len > ref_len, 1.0, np.exp(1.0 - ref_len / np.where(hyp_len > 0, hyp_len, 1.0)))
        bp = np.where(hyp_len > 0, bp, 0.0)
        logp = np.log(np.where(matches > 0, matches, 1.0) / totals).sum(axis=-1) / n
    # A zero precision at any order up to n gives BLEU-n = 0 (no smoothing).
    return np.where((matches > 0).all(axis=-1), bp * np.exp(logp), 0.0)


def corpus_bleu(hyps: Sequence[str], refs: RefsLike, max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..max_n (Papineni et al.), no smoothing: {"bleu_1": ..., "bleu_4": ...}.

    Clipped n-gram counts and lengths are summed over the corpus; the brevity penalty uses the
    reference length closest to each hypothesis (the shorter on ties). A zero precision at any
    order up to n gives BLEU-n = 0.
    """
    sums = bleu_statistics(hyps, refs, max_n).sum(axis=0)
    return {f"bleu_{n}": float(bleu_from_statistics(sums, n, max_n)) for n in range(1, max_n + 1)}


def _lcs_len(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_scores(hyps: Sequence[str], refs: RefsLike) -> list[float]:
    """Per-sample ROUGE-L F1 (LCS based, beta=1), best reference per sample."""
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
    return scores


def rouge_l(hyps: Sequence[str], refs: RefsLike) -> float:
    """Mean over samples of the ROUGE-L F1 (LCS based, beta=1); best reference per sample."""
    return float(np.mean(rouge_l_scores(hyps, refs)))


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


def _meteor_exact_pair(h: list[str], r: list[str], alpha: float, beta: float, gamma: float) -> float:
    pairs = _align_exact(h, r)
    m = len(pairs)
    if m == 0:
        return 0.0
    # a chunk is a run of matches that are adjacent in both sentences
    chunks = 1 + sum(1 for (a, b), (c, d) in zip(pairs, pairs[1:]) if (c, d) != (a + 1, b + 1))
    p, rec = m / len(h), m / len(r)
    fmean = p * rec / (alpha * p + (1 - alpha) * rec)
    return fmean * (1.0 - gamma * (chunks / m) ** beta)


def meteor_exact_scores(
    hyps: Sequence[str], refs: RefsLike, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> list[float]:
    """Per-sample :func:`meteor_exact` scores (best reference per sample)."""
    hyp_toks, ref_toks = _prep(hyps, refs)
    return [max(_meteor_exact_pair(h, r, alpha, beta, gamma) for r in rs) for h, rs in zip(hyp_toks, ref_toks)]


def meteor_exact(
    hyps: Sequence[str], refs: RefsLike, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> float:
    """METEOR restricted to exact unigram matches (no stems/synonyms: WordNet is not offline).

    Fmean = P*R / (alpha*P + (1-alpha)*R), penalty = gamma*(chunks/matches)^beta, score =
    Fmean*(1-penalty); best reference per sample; mean over samples. Not comparable with full
    METEOR, which also matches stems and synonyms (and so usually scores higher).
    """
    return float(np.mean(meteor_exact_scores(hyps, refs, alpha, beta, gamma)))


def cider_d(hyps: Sequence[str], refs: RefsLike, sigma: float = 6.0, max_n: int = 4) -> tuple[float, list[float]]:
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
            penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma**2))
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
