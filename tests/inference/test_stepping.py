"""Step-level batching (unimedvl.inference.stepping): requests join between steps, answers as if alone."""

from dataclasses import replace

import numpy as np
from inference_support import random_image

from unimedvl.inference.inferencer import Request
from unimedvl.inference.stepping import StepBatch, steppable
from unimedvl.sampling.flow import GuidanceConfig

EDIT = GuidanceConfig(4.0, 2.0, (0.0, 1.0), "text_channel", 0.0, 3.0, 6)
GENERATE = GuidanceConfig(4.0, 1.0, (0.4, 1.0), "global", 0.0, 3.0, 8)


def _requests():
    return [
        Request([random_image(32, 32, 31), "Remove the noise."], "edit", guidance=EDIT, seed=1),
        Request(["A chest X-ray."], "generate", guidance=GENERATE, height=32, width=48, seed=2),
        Request(
            [random_image(48, 32, 32), "Sharpen it."],
            "edit",
            guidance=replace(EDIT, num_timesteps=5),
            seed=3,
            strength=0.6,
        ),
        Request(
            ["An axial CT."], "generate", guidance=replace(GENERATE, cfg_text_scale=1.0), height=32, width=32, seed=4
        ),
    ]


def test_requests_joining_at_later_steps_get_the_images_they_get_alone(api):
    inf = api.inferencer
    alone = [inf.run([r])[0] for r in _requests()]
    stepper = StepBatch(inf)
    requests = _requests()
    results, joins = {}, {0: [0], 2: [1, 2], 3: [3]}  # step number -> requests arriving before it
    step = 0
    while step in joins or stepper.active:
        for k in joins.get(step, []):
            (member,) = stepper.admit([requests[k]])
            member.index = k
        for member, result in stepper.step():
            results[member.index] = result
        step += 1
    assert stepper.active == 0 and stepper.cache is None
    for k, expected in enumerate(alone):
        got = np.asarray(results[k].image).astype(int)
        assert got.shape == np.asarray(expected.image).shape
        assert np.abs(got - np.asarray(expected.image).astype(int)).max() <= 1, k  # fp32 round-off
        assert results[k].model_passes == expected.model_passes and results[k].seed == expected.seed


def test_members_finishing_at_the_same_step_are_decoded_together_and_match_alone(api):
    inf = api.inferencer
    requests = [
        Request([random_image(32, 32, 50 + k), "Remove the noise."], "edit", guidance=EDIT, seed=10 + k)
        for k in range(3)
    ]
    alone = [inf.run([r])[0] for r in requests]
    stepper = StepBatch(inf)
    decodes, finished = [], []  # images per VAE decode call; requests finishing per step
    decode = inf.decode_latents
    inf.decode_latents = lambda latents, grids: (decodes.append(len(grids)), decode(latents, grids))[1]
    results = {}
    try:
        for k, m in enumerate(stepper.admit(requests[:2])):  # admitted together: one prefill
            m.index = k
        while stepper.active:
            if len(finished) == 1:  # the third arrives one step later, so it finishes one step later
                (m,) = stepper.admit(requests[2:])
                m.index = 2
            done = stepper.step()
            finished.append(len(done))
            results.update((m.index, r) for m, r in done)
    finally:
        del inf.decode_latents
    assert [n for n in finished if n] == [2, 1] and decodes == [2, 1]
    for k, expected in enumerate(alone):
        got = np.asarray(results[k].image).astype(int)
        assert np.abs(got - np.asarray(expected.image).astype(int)).max() <= 1, k  # fp32 round-off
        assert results[k].model_passes == expected.model_passes


def test_only_reference_sampler_image_requests_are_stepped(api):
    inf = api.inferencer
    assert steppable(_requests()[0], inf) and steppable(Request(["x"], "generate"), inf)
    assert not steppable(Request(["What is this?"]), inf)
    assert not steppable(Request(["x"], "generate", guidance=replace(GENERATE, cache="teacache")), inf)
    assert not steppable(Request(["x"], "generate", guidance=replace(GENERATE, solver="dpm++2m")), inf)


def test_http_edits_sent_at_staggered_times_join_the_running_batch_and_match_the_library(api):
    import base64
    import io
    import threading
    import time

    import pytest
    from PIL import Image

    openai = pytest.importorskip("openai")
    from unimedvl.api.server import BackgroundServer, create_app
    from unimedvl.api.settings import ServerSettings

    settings = ServerSettings(port=0, max_batch=8, batch_window_ms=5, max_timesteps=50)
    app = create_app(api.inferencer, settings, model_id="debug")
    stepper = app.state.service.batcher._stepper
    sizes = []
    step = stepper.step
    # Each step takes at least 20 ms, so 30 steps outlast the 0.15 s between arrivals on any machine: the
    # later requests must find a running batch to join (a fast machine had finished each one alone).
    stepper.step = lambda: (sizes.append(stepper.active), time.sleep(0.02), step())[2]
    images = [random_image(32, 32, 40 + k) for k in range(4)]
    got = {}

    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    with BackgroundServer(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)

        def send(k):
            time.sleep(0.15 * k)
            out = client.images.edit(
                model="debug",
                image=("s.png", png(images[k]), "image/png"),
                prompt="Denoise.",
                extra_body={"seed": k, "num_timesteps": 30},
            )
            got[k] = np.asarray(Image.open(io.BytesIO(base64.b64decode(out.data[0].b64_json))).convert("RGB"))

        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert sorted(got) == [0, 1, 2, 3]
    for k, image in enumerate(images):
        alone = np.asarray(api.edit(image, "Denoise.", seed=k, num_timesteps=30)).astype(int)
        assert np.abs(got[k].astype(int) - alone).max() <= 1, k
    assert max(sizes) >= 2 and len(sizes) < 4 * 29  # later requests shared the steps of earlier ones
