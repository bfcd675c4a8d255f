"""Metrics against reference implementations (scikit-image, nltk, rouge-score, torchmetrics)
and hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from unimedvl import metrics as M
from unimedvl.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _noisy_pair(shape, sigma=20.0):
    a = RNG.integers(0, 256, shape, dtype=np.uint8)
    # smooth so SSIM is not dominated by noise
    a = np.asarray(
        Image.fromarray(a).resize((shape[1] // 4, shape[0] // 4)).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    )
    b = np.clip(a + RNG.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)
    return a, b


# ---------------------------------------------------------------- image metrics


def test_reference_mode_matches_skimage_and_resizes_gt_to_prediction():
    pred, _ = _noisy_pair((48, 64, 3))
    gt_big, _ = _noisy_pair((96, 128, 3))
    out = M.paired_image_metrics(pred, gt_big, mode="reference")
    gt = np.asarray(Image.fromarray(gt_big).resize((64, 48), Image.Resampling.BICUBIC))
    assert out["metric_mode"] == "reference" and (out["height"], out["width"]) == (48, 64)
    assert out["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-9)
    # the spec formula, written out
    mse = np.mean((pred.astype(float) - gt.astype(float)) ** 2)
    assert out["psnr"] == pytest.approx(20 * math.log10(255 / math.sqrt(mse)), abs=1e-9)
    ref = structural_similarity(pred, gt, channel_axis=-1, data_range=255)
    assert out["ssim"] == pytest.approx(ref, abs=1e-9)


def test_reference_mode_grayscale_and_paths(tmp_path):
    a, b = _noisy_pair((40, 40))
    Image.fromarray(a).save(tmp_path / "a.png")
    out = M.paired_image_metrics(tmp_path / "a.png", b)
    a3, b3 = np.repeat(a[..., None], 3, -1), np.repeat(b[..., None], 3, -1)
    assert out["ssim"] == pytest.approx(structural_similarity(a3, b3, channel_axis=-1, data_range=255), abs=1e-9)
    assert out["psnr"] == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-9)


def test_native_mode_on_hu_scale_resizes_prediction_to_gt():
    gt = np.cumsum(RNG.normal(0, 30, (40, 52)), axis=1) - 500.0  # HU-like, smooth along rows
    pred_small = gt[::2, ::2] + RNG.normal(0, 20, (20, 26))
    out = M.paired_image_metrics(pred_small, gt, mode="native", data_range=2000.0)
    pred = np.asarray(
        Image.fromarray(pred_small.astype(np.float32)).resize((52, 40), Image.Resampling.BICUBIC), dtype=np.float64
    )
    assert out["metric_mode"] == "native" and (out["height"], out["width"]) == (40, 52)
    assert out["data_range"] == 2000.0
    assert out["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=2000), abs=1e-9)
    assert out["ssim"] == pytest.approx(structural_similarity(gt, pred, data_range=2000), abs=1e-9)


def test_native_mode_integer_default_range_and_errors():
    a = RNG.integers(0, 4096, (32, 32)).astype(np.uint16)
    b = a.copy()
    b[::3] += 50
    out = M.paired_image_metrics(b, a, mode="native")
    assert out["data_range"] == 65535.0
    assert out["psnr"] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=65535))
    with pytest.raises(ConfigError, match="data_range"):
        M.paired_image_metrics(a.astype(float), a.astype(float), mode="native")
    with pytest.raises(DataError, match="uint8"):
        M.paired_image_metrics(a.astype(float), a.astype(float), mode="reference")
    with pytest.raises(DataError, match="channel"):
        M.paired_image_metrics(np.zeros((32, 32, 3)), a.astype(float), mode="native", data_range=1.0)
    with pytest.raises(ConfigError, match="mode"):
        M.paired_image_metrics(a, a, mode="hu")


def test_rescale_intensity_roundtrip_window():
    hu = np.linspace(-1000, 1000, 256 * 4).reshape(32, 32)
    png = np.round((hu + 1000) / 2000 * 255).astype(np.uint8)
    back = M.rescale_intensity(png, -1000, 1000)
    assert np.abs(back - hu).max() <= 2000 / 255 / 2 + 1e-9


def test_identical_images_infinite_psnr_kept_out_of_means():
    a, _ = _noisy_pair((32, 32, 3))
    out = M.paired_image_metrics(a, a)
    assert math.isinf(out["psnr"]) and out["ssim"] == pytest.approx(1.0)
    assert M.mean_std_finite([math.inf, 30.0, None, 34.0, float("nan")]) == (32.0, 2.0)
    assert M.mean_std_finite([math.inf, None]) == (None, None)


def _ms_ssim_by_definition(x, y, data_range):
    """MS-SSIM of one channel from Wang et al. 2003: 11px Gaussian (sigma 1.5) valid windows,
    contrast-structure at scales 1..4, luminance too at scale 5, 2x2 average pooling."""
    from scipy.ndimage import correlate1d

    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(img):  # separable Gaussian, keep only fully covered ("valid") positions
        out = correlate1d(correlate1d(img, g, axis=0), g, axis=1)
        return out[5:-5, 5:-5]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    result = 1.0
    for j, w in enumerate(weights):
        mx, my = filt(x), filt(y)
        vx, vy, vxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
        cs = (2 * vxy + c2) / (vx + vy + c2)
        if j < 4:
            result *= max(cs.mean(), 0.0) ** w
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
        else:
            lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            result *= max((lum * cs).mean(), 0.0) ** w
    return result


def test_ms_ssim_matches_its_definition():
    a, b = _noisy_pair((192, 192, 3), sigma=15.0)
    ours = M.paired_image_metrics(a, b, with_ms_ssim=True)["ms_ssim"]
    ref = np.mean([_ms_ssim_by_definition(a[..., c].astype(float), b[..., c].astype(float), 255) for c in range(3)])
    assert 0.5 < ours < 1.0
    assert ours == pytest.approx(ref, abs=1e-6)
    assert M.ms_ssim(a.astype(float), a.astype(float), 255.0) == pytest.approx(1.0)
    with pytest.raises(DataError, match="160"):
        M.ms_ssim(a[:64, :64].astype(float), b[:64, :64].astype(float), 255.0)


@pytest.mark.slow  # importing torchmetrics alone takes ~10 s here
def test_ms_ssim_close_to_torchmetrics():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    a, b = _noisy_pair((192, 192, 3), sigma=15.0)
    ours = M.paired_image_metrics(a, b, with_ms_ssim=True)["ms_ssim"]
    ta = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].double()
    tb = torch.from_numpy(b.copy()).permute(2, 0, 1)[None].double()
    ref = multiscale_structural_similarity_index_measure(tb, ta, data_range=255.0, normalize=None).item()
    assert ours == pytest.approx(ref, abs=2e-3)  # the libraries differ slightly at borders


# ---------------------------------------------------------------- VQA / multiple choice


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The Left Lung.", "left lung"),
        ("Two lesions", "2 lesions"),
        ("an MRI, T2-weighted!", "mri t2 weighted"),
        ("1,000 cells", "1000 cells"),
        ("2.5 cm.", "2.5 cm"),
        ("  Twenty  ", "20"),
    ],
)
def test_normalize_answer(text, expected):
    assert M.normalize_answer(text) == expected


@pytest.mark.parametrize(
    "pred,gt,ok",
    [
        ("Yes, there is a mass in the left lung.", "yes", True),
        ("yes", "Yes", True),
        ("No.", "no", True),
        ("No, the heart is normal", "yes", False),
        ("There is no effusion", "no", False),  # yes/no is read from the first word only
        ("Correct", "yes", True),
        ("The CT", "ct", True),
        ("MRI", "ct", False),
        ("two", "2", True),
    ],
)
def test_closed_question_matching(pred, gt, ok):
    assert M.closed_correct(pred, gt) is ok


def test_open_recall_exact_match_and_vqa_scores():
    assert M.open_recall("the lesion is in the right upper lobe", "Right upper lobe") == 1.0
    assert M.open_recall("right lung", "right upper lobe") == pytest.approx(1 / 3)
    assert M.exact_match("The right upper lobe.", "right upper lobe")
    assert not M.exact_match("right upper lobe mass", "right upper lobe")
    scores = M.vqa_scores(
        ["Yes, it is", "no", "left lung", "liver"],
        ["yes", "yes", "the left lung", "spleen"],
        ["CLOSED", "closed", "open", "OPEN"],
    )
    assert scores == {
        "closed_accuracy": 0.5,
        "closed_count": 2,
        "open_recall": 0.5,
        "open_exact_match": 0.5,
        "open_count": 2,
    }
    inferred = M.vqa_scores(["yes", "heart"], ["yes", "heart"])
    assert inferred["closed_count"] == 1 and inferred["open_count"] == 1


OPTIONS = {"A": "Pneumonia", "B": "Pleural effusion", "C": "Pneumothorax", "D": "Normal"}


@pytest.mark.parametrize(
    "text,letter",
    [
        ("(B)", "B"),
        ("B.", "B"),
        ("B", "B"),
        ("b) pleural effusion", "B"),
        ("Answer: B", "B"),
        ("The answer is c because the lung edge is visible", "C"),
        ("the answer is (D).", "D"),
        ("I think the correct option is (A)", "A"),
        ("Pleural effusion", "B"),
        ("The image shows a pneumothorax on the right.", "C"),
        ("A. Pneumonia", "A"),
        ("A chest film with pleural effusion", "B"),  # the article 'A' is not an option letter
        ("the answer is a large pleural effusion", "B"),
        ("E", None),
        ("I cannot tell", None),
    ],
)
def test_extract_choice(text, letter):
    assert M.extract_choice(text, OPTIONS) == letter


def test_extract_choice_prefers_the_longest_option_text_and_list_options():
    opts = ["pneumonia", "viral pneumonia"]
    assert M.extract_choice("This is viral pneumonia.", opts) == "B"
    assert M.extract_choice("pneumonia", opts) == "A"
    assert M.multiple_choice_accuracy(["(A)", "B", "no idea"], ["A", "(b)", "A"], [opts] * 3) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- report metrics

HYPS = [
    "The heart is normal in size. No pleural effusion.",
    "no focal consolidation is seen in the lungs",
    "There is a small left pleural effusion with adjacent atelectasis.",
    "Mild cardiomegaly, lungs are clear.",
]
REFS = [
    ["Heart size is normal. There is no pleural effusion.", "The heart is normal"],
    ["The lungs are clear without focal consolidation."],
    ["Small left pleural effusion is present, with atelectasis at the left base."],
    ["The heart is mildly enlarged. The lungs are clear."],
]


def test_bleu_matches_nltk_corpus_bleu():
    from nltk.translate.bleu_score import corpus_bleu

    ours = M.corpus_bleu(HYPS, REFS)
    refs_tok = [[M.tokenize(r) for r in rs] for rs in REFS]
    hyps_tok = [M.tokenize(h) for h in HYPS]
    for n in range(1, 5):
        ref = corpus_bleu(refs_tok, hyps_tok, weights=tuple([1.0 / n] * n))
        assert ours[f"bleu_{n}"] == pytest.approx(ref, abs=1e-12), n
    # brevity penalty: a short hypothesis
    short = M.corpus_bleu(["heart normal"], ["the heart is normal"])
    assert short["bleu_1"] == pytest.approx(math.exp(1 - 4 / 2))
    # no 4-gram in common -> BLEU-4 is 0 without smoothing, BLEU-1 is not
    assert M.corpus_bleu(["a b c d"], ["a b x c d"]) == pytest.approx(
        {
            "bleu_1": 1.0 * math.exp(1 - 5 / 4),
            "bleu_2": math.exp(1 - 5 / 4) * math.sqrt(2 / 3),
            "bleu_3": 0.0,
            "bleu_4": 0.0,
        }
    )


def test_rouge_l_matches_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    ref = np.mean([scorer.score_multi(rs, h)["rougeL"].fmeasure for h, rs in zip(HYPS, REFS)])
    assert M.rouge_l(HYPS, REFS) == pytest.approx(ref, abs=1e-12)


def test_wordnet_is_unavailable_offline_so_meteor_is_exact_only():
    # If this starts failing, WordNet became available and full METEOR could be offered.
    from nltk.corpus import wordnet

    with pytest.raises(LookupError):
        wordnet.synsets("heart")


class _NoSynonyms:
    def synsets(self, word):
        return []


class _NoStem:
    def stem(self, word):
        return word


def test_meteor_exact_matches_nltk_without_stems_or_synonyms():
    from nltk.translate.meteor_score import meteor_score

    # sentences without repeated words, so the alignment is unique and both must agree
    hyps = ["heart size normal lungs clear", "small left effusion seen", "no acute findings"]
    refs = [["the heart size is normal and lungs are clear"], ["left small effusion"], ["normal chest"]]
    for h, rs in zip(hyps, refs):
        ref = meteor_score([M.tokenize(r) for r in rs], M.tokenize(h), wordnet=_NoSynonyms(), stemmer=_NoStem())
        assert M.meteor_exact([h], [rs]) == pytest.approx(ref, abs=1e-12)


def test_meteor_exact_hand_case_keeps_phrases_whole():
    # all 6 words match; best tiling: "the cat" | "sat" | "on the mat" -> 3 chunks
    score = M.meteor_exact(["the cat sat on the mat"], ["on the mat sat the cat"])
    assert score == pytest.approx(1.0 * (1 - 0.5 * (3 / 6) ** 3))
    # P = 2/3, R = 2/2: Fmean = PR / (0.9 P + 0.1 R); one chunk
    p, r = 2 / 3, 1.0
    assert M.meteor_exact(["left effusion small"], ["left effusion"]) == pytest.approx(
        p * r / (0.9 * p + 0.1 * r) * (1 - 0.5 * (1 / 2) ** 3)
    )


def test_cider_d_hand_computed():
    # Two samples, N = 2. idf = log(2 / df): "a" is in both reference sets -> idf 0;
    # every other n-gram occurs in one set (or none) -> idf L = log 2.
    # Sample 1, cand "a b b" vs ref "a b":
    #   n=1: cand (a:0, b:2L), ref (a:0, b:L): min(2L, L)*L / (2L * L) = 1/2
    #   n=2: cand (ab:L, bb:L), ref (ab:L): L*L / (sqrt(2)L * L) = 1/sqrt(2)
    #   n=3: ref has no trigram -> 0; n=4 -> 0;  length penalty exp(-(3-2)^2 / 72)
    # Sample 2, cand "a d" vs ref "a c": only "a" is shared and its weight is 0 -> 0
    corpus, per_sample = M.cider_d(["a b b", "a d"], ["a b", "a c"])
    s1 = 10 * math.exp(-1 / 72) * (0.5 + 1 / math.sqrt(2)) / 4
    assert per_sample == pytest.approx([s1, 0.0])
    assert corpus == pytest.approx(s1 / 2)


def test_cider_d_properties():
    refs = ["the heart is normal", "small left pleural effusion", "lungs are clear bilaterally"]
    # candidate equal to its only reference, all n-grams informative, >= 4 words -> exactly 10
    assert M.cider_d(refs, refs)[0] == pytest.approx(10.0)
    # averaged over references: a second, unrelated reference halves the score
    two = M.cider_d(refs, [[r, "zz yy xx ww"] for r in refs])[1]
    assert two[0] == pytest.approx(5.0)
    # one-sample corpus: every idf is log(1/1) = 0
    assert M.cider_d(["the heart"], ["the heart"])[0] == 0.0
    # the length penalty only lowers the score
    longer = M.cider_d(["the heart is normal today", *refs[1:]], refs)[1][0]
    assert 0 < longer < 10.0


def test_report_metrics_keys():
    out = M.report_metrics(HYPS, REFS)
    assert set(out) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor_exact", "cider_d"}
    with pytest.raises(DataError):
        M.report_metrics(HYPS, REFS[:2])


# ---------------------------------------------------------------- FID


def test_frechet_distance_identical_and_shifted_gaussians():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 6))
    assert M.fid_from_features(x, x.copy()) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    # same samples shifted: identical covariances, so FID = ||shift||^2 exactly
    assert M.fid_from_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # independent draws approach the analytic value
    y = rng.normal(size=(20000, 6)) + shift  # sampling sd of the estimate is about 0.08
    assert M.fid_from_features(x, y) == pytest.approx(float(shift @ shift), abs=0.3)
    # diagonal covariances: sum (sqrt(s1) - sqrt(s2))^2
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert M.frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(4.0 + 1.0)


def _images(n, seed, offset=0):
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(120 + offset, 40, (24, 24, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def test_compute_fid_default_is_labelled_pixelstats():
    a = _images(30, 1)
    same = M.compute_fid(a, a)
    assert same["metric"] == "fid_pixelstats" and same["feature_extractor"] == "pixelstats-4x4"
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and same["num_a"] == 30
    assert M.compute_fid(a, _images(30, 2, offset=60))["value"] > 1.0


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_load_torchscript_and_safetensors_extractors(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = TinyNet().eval()
    torch.jit.script(net).save(str(tmp_path / "tiny.pt"))
    ext = M.load_feature_extractor(tmp_path / "tiny.pt", input_size=(16, 16))
    assert ext.name.startswith("tiny.pt@") and ext.metric == "fid"
    imgs = _images(8, 3)
    feats = M.extract_features(imgs, ext)
    batch = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in imgs])
    batch = torch.nn.functional.interpolate(batch, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(torch.from_numpy(feats), net(batch).double().detach())
    res = M.compute_fid(imgs, _images(8, 4), ext)
    assert res["metric"] == "fid" and res["feature_extractor"] == ext.name

    save_file(net.state_dict(), str(tmp_path / "tiny.safetensors"))
    (tmp_path / "tinynet_mod.py").write_text(
        "import torch\n\n"
        "class TinyNet(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 5, 3, stride=2)\n\n"
        "    def forward(self, x):\n"
        "        return self.conv(x).mean(dim=(2, 3))\n\n"
        "def build():\n"
        "    return TinyNet()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ext2 = M.load_feature_extractor(
        tmp_path / "tiny.safetensors", "tinynet_mod:build", input_size=(16, 16), name="tiny-net"
    )
    assert ext2.name == "tiny-net"
    np.testing.assert_allclose(M.extract_features(imgs, ext2), feats, atol=1e-6)
    with pytest.raises(ConfigError, match="module_spec"):
        M.load_feature_extractor(tmp_path / "tiny.safetensors")
    with pytest.raises(ConfigError, match="not found"):
        M.load_feature_extractor(tmp_path / "missing.pt")


@pytest.mark.slow  # torch.export takes several seconds
def test_load_exported_program_extractor(tmp_path):
    net = TinyNet().eval()
    batch = torch.export.Dim("batch")
    ep = torch.export.export(net, (torch.rand(2, 3, 16, 16),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(tmp_path / "tiny.pt2"))
    ext = M.load_feature_extractor(tmp_path / "tiny.pt2", input_size=(16, 16))
    imgs = _images(5, 3)
    ref = M.extract_features(imgs, M.FeatureExtractor("eager", net, input_size=(16, 16)))
    np.testing.assert_allclose(M.extract_features(imgs, ext), ref, atol=1e-6)
