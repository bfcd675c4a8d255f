"""What the hardening of issue 17 saves on hostile inputs, each against its baseline in the same run.

1. A 10 MB question: tokenising it (what the loader and the inferencer did) vs the lower bound that
   now decides it is too long (``Tokenizer.tokens_exceed``: one pass over its bytes, then NFC).
2. ``ask`` on a 12000 x 12000 PNG and a 12000 x 12000 JPEG: the full decode the inferencer did
   (``load_image`` then the VAE resize to 1024) vs the reduced decode it does now (target size
   from the header, JPEG draft / integer reduce to 3x the target, then the resize). Each variant
   runs in its own process, so the peak resident memory (ru_maxrss) is that variant's alone.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:tests .venv/bin/python bench/bad_inputs.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _text(repeats: int) -> None:
    import drill_support as ds
    from unimedvl.tokenizer import Tokenizer

    tokenizer = Tokenizer.offline_qwen()
    text = ds.huge_text(10)
    _ = tokenizer.max_token_bytes  # computed once per tokenizer, as in a long-running process
    rows = {}
    for name, fn in (
        ("tokenise (before)", lambda: len(tokenizer.encode(text)) > 16384),
        ("bound (now)", lambda: tokenizer.tokens_exceed(text, 16384)),
    ):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            assert fn()
            best = min(best, time.perf_counter() - start)
        rows[name] = best
    tokens = len(tokenizer.encode(text))
    print(
        f"10 MB question ({tokens} tokens; bound {tokenizer.min_tokens(text)}): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in rows.items())
        + f", ratio {rows['tokenise (before)'] / rows['bound (now)']:.1f}x"
    )


def _decode(path: str, reduced: bool) -> None:
    """One variant in this process: print (seconds, peak RSS MB, size fed to the model)."""
    from unimedvl.checkpoint.inference_config import RELEASE_VAE_TRANSFORM as vae
    from unimedvl.imaging.medical_io import image_size, load_image

    start = time.perf_counter()
    if reduced:
        target = vae.target_size(*image_size(path))
        image = vae.resize(load_image(path, reduce_to=target))
    else:
        image = vae.resize(load_image(path))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "size": image.size}))


def _make(folder: Path) -> None:
    """The two 12000 x 12000 test images (in their own process: a parent holding gigabytes would hand
    its resident size to the children it starts, and their peaks would include it)."""
    import numpy as np
    from PIL import Image

    import drill_support as ds

    ds.png_bomb(folder / "large.png", 12000, 12000)
    gradient = np.linspace(0, 255, 12000, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(gradient, (12000, 12000)).copy()).convert("RGB").save(
        folder / "large.jpg", quality=85
    )


def _images(folder: Path) -> None:
    subprocess.run([sys.executable, __file__, "--make", str(folder)], check=True)
    for path in (folder / "large.png", folder / "large.jpg"):
        out = {}
        for reduced in (False, True):
            done = subprocess.run(
                [sys.executable, __file__, "--decode", str(path), str(int(reduced))],
                capture_output=True,
                text=True,
                check=True,
            )
            out[reduced] = json.loads(done.stdout.strip().splitlines()[-1])
        full, now = out[False], out[True]
        print(
            f"ask on {path.name} (12000x12000 -> {tuple(now['size'])}): full decode {full['seconds']:.2f} s, "
            f"peak {full['peak_mb']:.0f} MB; reduced {now['seconds']:.2f} s, peak {now['peak_mb']:.0f} MB; "
            f"time ratio {full['seconds'] / now['seconds']:.1f}x, memory ratio {full['peak_mb'] / now['peak_mb']:.1f}x"
        )


def main() -> None:
    if sys.argv[1:2] == ["--decode"]:
        _decode(sys.argv[2], bool(int(sys.argv[3])))
        return
    if sys.argv[1:2] == ["--make"]:
        _make(Path(sys.argv[2]))
        return
    from _machine import machine

    print("machine:", machine())
    with open("/proc/loadavg") as handle:
        print("load average:", " ".join(handle.read().split()[:3]))
    with tempfile.TemporaryDirectory() as folder:  # the images first: the tokenizer would raise our RSS
        _images(Path(folder))
    _text(repeats=3)


if __name__ == "__main__":
    main()
