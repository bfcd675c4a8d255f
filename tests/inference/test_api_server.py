"""The HTTP API end to end: uvicorn on 127.0.0.1 in a thread, the debug model, the official openai client.

One server serves the module. Its batches go through a :class:`Gate` around ``Inferencer.run``
that records every batch and can hold the worker, so that tests decide what is queued when
(batching, a full queue, cancellation) instead of relying on timing.
"""

import base64
import contextlib
import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from inference_support import STEPS, random_image
from PIL import Image

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from unimedvl.api.server import BackgroundServer, create_app  # noqa: E402
from unimedvl.api.settings import ServerSettings  # noqa: E402
from unimedvl.errors import DataError  # noqa: E402
from unimedvl.inference.inferencer import Request  # noqa: E402

KEY = "test-key"
MAX_TOKENS = 32


class Gate:
    """``Inferencer.run`` that records its batches and can hold the worker before (or inside) one."""

    def __init__(self, run):
        self.run = run
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()  # a batch reached the gate
        self.calls: list[tuple[list, list]] = []  # (requests, results) per batch
        self.hold_at_first_token: threading.Event | None = None  # set: pause in the first token until it is set
        self.first_token = threading.Event()
        self.fail_on: str | None = None  # a batch with this text among its inputs fails as a user error would

    def __call__(self, requests, progress):
        self.entered.set()
        assert self.open.wait(60), "a test left the gate closed"
        if self.hold_at_first_token is not None:
            for request in requests:
                request.on_token = self._pausing(request.on_token)
        if self.fail_on is not None and any(self.fail_on in r.inputs for r in requests):
            raise DataError(f"cannot serve {self.fail_on!r}")
        results = self.run(requests, progress)
        self.calls.append((list(requests), results))
        return results

    def _pausing(self, forward):
        def on_token(token):
            if forward is not None:
                forward(token)
            if not self.first_token.is_set():
                self.first_token.set()
                assert self.hold_at_first_token.wait(60)

        return on_token


@pytest.fixture(scope="module")
def served(api):
    gate = Gate(api.inferencer.run)
    settings = ServerSettings(
        port=0,
        api_key=KEY,
        max_batch=8,
        batch_window_ms=20,
        queue_size=8,
        max_body_mb=1,
        max_image_pixels=128 * 128,
        max_tokens=MAX_TOKENS,
        max_timesteps=50,
    )
    app = create_app(api.inferencer, settings, model_id="debug", run=gate)
    with BackgroundServer(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        yield SimpleNamespace(url=server.url, gate=gate, service=app.state.service, model=api, client=client)


@pytest.fixture
def srv(served):
    served.gate.calls.clear()
    served.gate.open.set()
    yield served
    served.gate.open.set()  # never leave the worker held for the next test
    served.gate.fail_on = None


def _client(srv) -> "openai.OpenAI":
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode()


def _user(image, text):
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": _data_url(image)}}, {"type": "text", "text": text}],
    }


def _decoded(item) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB"))


def _close_images(a: np.ndarray, b: np.ndarray) -> None:
    # Batched kernels may round differently in the last float bits (the library's own tolerance):
    # at most one grey level on a few pixels, where a seed mix-up would change every pixel.
    diff = np.abs(a.astype(int) - b.astype(int))
    assert a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01


def _wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@contextlib.contextmanager
def held(srv):
    """The worker held inside a batch (a one-token question), so that new requests queue up."""
    gate = srv.gate
    gate.entered.clear()
    gate.open.clear()
    pool = ThreadPoolExecutor(1)
    blocker = pool.submit(
        _client(srv).chat.completions.create,
        model="debug",
        max_tokens=1,
        messages=[{"role": "user", "content": "blocker"}],
    )
    try:
        assert gate.entered.wait(60)
        yield
    finally:
        gate.open.set()
        blocker.result(60)
        pool.shutdown()


def _metrics(srv) -> str:
    return httpx.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text


# -- the routes -------------------------------------------------------------------------------


def test_models_lists_the_checkpoint_and_its_sizes(srv):
    (entry,) = srv.client.models.list().data
    assert entry.id == "debug" and entry.owned_by == "unimedvl"
    info = entry.model_extra["unimedvl"]
    assert info["tasks"] == ["understand", "edit", "generate"]
    inf = srv.model.inferencer
    assert info["vae_transform"]["max_image_size"] == inf.vae_transform.max_image_size == 64
    assert info["vit_transform"]["min_image_size"] == inf.vit_transform.min_image_size == 56
    assert info["limits"]["max_tokens"] == MAX_TOKENS and info["guidance"]["edit"]["cfg_img_scale"] == 2.0


def test_chat_with_an_image_answers_like_the_library(srv):
    image, question = random_image(40, 40, 0), "What imaging modality is this?"
    reply = srv.client.chat.completions.create(model="debug", messages=[_user(image, question)], max_tokens=8)
    expected = srv.model.ask(image, question, max_new_tokens=8)
    assert reply.object == "chat.completion" and reply.model == "debug"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "length"  # the debug model does not stop within 8 tokens
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 8


def test_a_dicom_data_url_is_read_with_its_window(srv):
    from pydicom.data import get_testdata_file

    from unimedvl.imaging.medical_io import load_image

    path = get_testdata_file("CT_small.dcm")
    url = "data:application/dicom;window=lung;base64," + base64.b64encode(Path(path).read_bytes()).decode()
    message = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "Which window is this?"},
        ],
    }
    reply = srv.client.chat.completions.create(model="debug", messages=[message], max_tokens=6)
    assert reply.choices[0].message.content == srv.model.ask(
        load_image(path, window="lung"), "Which window is this?", max_new_tokens=6
    )


def test_streaming_sends_the_answer_token_by_token(srv):
    messages = [_user(random_image(40, 48, 1), "Describe the findings.")]
    whole = srv.client.chat.completions.create(model="debug", messages=messages, max_tokens=12)
    chunks = list(
        srv.client.chat.completions.create(
            model="debug", messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 6  # one event per token (a token inside a character waits for the next)
    assert "".join(pieces) == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_thinking_mode_returns_the_reasoning_apart(srv):
    image, question = random_image(32, 32, 7), "Is there a lesion?"
    messages = [_user(image, question)]
    reply = srv.client.chat.completions.create(
        model="debug", messages=messages, max_tokens=10, extra_body={"think": True}
    )
    expected = srv.model.ask(image, question, think=True, max_new_tokens=10)
    message = reply.choices[0].message
    assert message.content == expected.text
    assert message.model_extra["reasoning_content"] == expected.thinking
    plain = srv.client.chat.completions.create(model="debug", messages=messages, max_tokens=10)
    assert plain.choices[0].message.content != message.content  # the thinking prompt changed the context
    streamed = srv.client.chat.completions.create(
        model="debug", messages=messages, max_tokens=10, stream=True, extra_body={"think": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == message.content


def test_multi_turn_messages_rebuild_the_context(srv):
    image = random_image(40, 40, 10)
    first = srv.client.chat.completions.create(model="debug", messages=[_user(image, "What is this?")], max_tokens=5)
    answer = first.choices[0].message.content
    messages = [
        {"role": "system", "content": "You are a radiologist."},
        _user(image, "What is this?"),
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Where is the lesion?"},
    ]
    second = srv.client.chat.completions.create(model="debug", messages=messages, max_tokens=6)
    inf = srv.model.inferencer
    expected = inf.run(
        [Request(["You are a radiologist.", image, "What is this?", answer, "Where is the lesion?"], max_new_tokens=6)]
    )[0]
    assert second.choices[0].message.content == expected.text
    alone = inf.run([Request([image, "Where is the lesion?"], max_new_tokens=6)])[0]
    assert second.choices[0].message.content != alone.text  # the earlier turns are in the context


def test_an_edit_through_multipart_equals_the_library_edit(srv):
    image, instruction = random_image(48, 64, 1), "Remove the noise."
    out = srv.client.images.edit(
        model="debug",
        image=("scan.png", _png(image), "image/png"),
        prompt=instruction,
        extra_body={"seed": 1, "num_timesteps": STEPS},
    )
    expected = srv.model.edit(image, instruction, seed=1, num_timesteps=STEPS)
    got = _decoded(out.data[0])
    assert got.shape == (48, 64, 3)  # the input's size after the resize rule
    assert np.array_equal(got, np.asarray(expected))  # served alone, like the library: exactly equal
    # Raw bytes (sent as application/octet-stream, no file name) and two images (image[]) work too.
    second = random_image(32, 32, 2)
    both = srv.client.images.edit(
        model="debug",
        image=[_png(image), _png(second)],
        prompt=instruction,
        extra_body={"seed": 1, "num_timesteps": STEPS},
    )
    assert _decoded(both.data[0]).shape == (32, 32, 3)  # the last input's size


def test_a_generation_returns_n_seeded_images(srv):
    prompt = "An axial brain MRI."
    out = srv.client.images.generate(
        model="debug",
        prompt=prompt,
        size="48x32",
        n=2,
        response_format="b64_json",
        extra_body={"seed": 5, "num_timesteps": STEPS},
    )
    first, second = (_decoded(item) for item in out.data)
    assert first.shape == (32, 48, 3)  # size is WIDTHxHEIGHT
    _close_images(first, np.asarray(srv.model.generate(prompt, height=32, width=48, seed=5, num_timesteps=STEPS)))
    _close_images(second, np.asarray(srv.model.generate(prompt, height=32, width=48, seed=6, num_timesteps=STEPS)))
    assert [item.model_extra["seed"] for item in out.data] == [5, 6]


# -- safety -----------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401_and_health_needs_none(srv):
    wrong = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="debug", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "invalid_api_key" and "--api-key" in err.value.message
    for path in ("/v1/models", "/metrics", "/v1/nothing-here"):
        response = httpx.get(srv.url + path)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
    assert srv.gate.calls == []  # nothing reached the model


def test_another_model_name_is_404_as_from_vllm(srv):
    with pytest.raises(openai.NotFoundError) as err:
        srv.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found" and "'debug'" in err.value.message
    with pytest.raises(openai.NotFoundError):
        srv.client.images.generate(model="dall-e-3", prompt="x-ray")
    assert srv.gate.calls == []  # nothing reached the model


def test_a_question_about_this_scan_without_one_comes_back_with_a_warning(srv):
    reply = srv.client.chat.completions.create(
        model="debug", max_tokens=1, messages=[{"role": "user", "content": "Is there a lesion in this scan?"}]
    )
    assert "no image was given" in reply.model_extra["warning"] and "image_url" in reply.model_extra["warning"]
    plain = srv.client.chat.completions.create(
        model="debug", max_tokens=1, messages=[{"role": "user", "content": "What is a pneumothorax?"}]
    )
    assert "warning" not in plain.model_extra


def test_a_body_over_the_limit_is_413(srv):
    big = "data:image/png;base64," + base64.b64encode(b"\0" * 1_200_000).decode()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}]}
    with pytest.raises(openai.APIStatusError) as err:
        srv.client.chat.completions.create(model="debug", messages=[message])
    assert err.value.status_code == 413 and err.value.code == "request_too_large"

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(20):
            yield b"x" * 100_000

    response = httpx.post(
        srv.url + "/v1/chat/completions",
        content=chunks(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(max_tokens=MAX_TOKENS + 1), "max_tokens"),
        (dict(n=9), "n"),
        (dict(stop=["\n"]), "stop"),
        (
            dict(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}],
                    }
                ]
            ),
            "messages[0].content[0].image_url",
        ),
        (
            dict(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": _data_url(random_image(200, 100, 0))}}],
                    }
                ]
            ),
            "messages[0].content[0].image_url",
        ),  # 20,000 pixels, over the 16,384 limit
        (dict(messages=[{"role": "assistant", "content": "hello"}]), "messages[0].role"),
        (dict(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    ],
)
def test_requests_outside_the_limits_are_400_with_the_field(srv, kwargs, param):
    body = {"model": "debug", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        srv.client.chat.completions.create(**body)
    assert err.value.param == param and err.value.type == "invalid_request_error"


def test_image_requests_outside_the_limits_are_400(srv):
    for extra, words in (
        (dict(size="40x32"), "multiple of 16"),
        (dict(extra_body={"num_timesteps": 51}), "51"),
        (dict(response_format="url"), "b64_json"),
    ):
        with pytest.raises(openai.BadRequestError, match=words):
            srv.client.images.generate(model="debug", prompt="x-ray", **extra)


def test_errors_have_openai_shape(srv):
    auth = {"Authorization": f"Bearer {KEY}"}
    missing = httpx.get(srv.url + "/v1/nothing-here", headers=auth)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    bad_json = httpx.post(srv.url + "/v1/chat/completions", content=b"{not json", headers=auth)
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    not_multipart = httpx.post(srv.url + "/v1/images/edits", json={"prompt": "x"}, headers=auth)
    assert not_multipart.status_code == 400 and "multipart" in not_multipart.json()["error"]["message"]


def test_a_failure_in_the_worker_is_a_400_or_an_error_event(srv):
    srv.gate.fail_on = "UNSERVABLE"
    messages = [{"role": "user", "content": "UNSERVABLE"}]
    with pytest.raises(openai.BadRequestError, match="cannot serve 'UNSERVABLE'"):
        srv.client.chat.completions.create(model="debug", messages=messages, max_tokens=2)
    stream = srv.client.chat.completions.create(model="debug", messages=messages, max_tokens=2, stream=True)
    with pytest.raises(openai.APIError, match="cannot serve 'UNSERVABLE'"):  # after the 200 headers went out
        list(stream)
    fine = srv.client.chat.completions.create(model="debug", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert fine.choices[0].finish_reason == "length"  # the worker lives on


def test_a_full_queue_answers_503_with_retry_after(srv):
    with held(srv), ThreadPoolExecutor(1) as pool:
        eight = pool.submit(
            _client(srv).chat.completions.create,
            model="debug",
            n=8,
            max_tokens=2,
            messages=[{"role": "user", "content": "fill the queue"}],
        )
        _wait_for(lambda: srv.service.batcher.depth == 8, "eight queued requests")
        with pytest.raises(openai.InternalServerError) as err:
            srv.client.chat.completions.create(model="debug", messages=[{"role": "user", "content": "one more"}])
        assert err.value.status_code == 503 and err.value.code == "queue_full"
        assert int(err.value.response.headers["Retry-After"]) >= 1
        srv.gate.open.set()
        assert len(eight.result(60).choices) == 8  # the queued ones are still served
    assert "one more" not in str([r.inputs for requests, _ in srv.gate.calls for r in requests])


# -- batching ---------------------------------------------------------------------------------


def _ask(srv, spec):
    """One client's request; returns the answer text (streamed requests joined)."""
    image_seed, question, temperature, seed, stream = spec
    reply = _client(srv).chat.completions.create(
        model="debug",
        messages=[_user(random_image(40, 40, image_seed), question)],
        max_tokens=10,
        temperature=temperature,
        seed=seed,
        stream=stream,
    )
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
    return reply.choices[0].message.content


SPECS = [  # (image seed, question, temperature, seed, stream)
    (0, "What is this?", 0.0, None, False),
    (1, "What is this?", 0.0, None, True),
    (2, "Is there a lesion?", 0.9, 11, False),
    (2, "Is there a lesion?", 0.9, 12, False),
    (3, "Describe the findings.", 0.7, 3, True),
    (4, "Which modality?", 0.0, None, False),
    (5, "Where is the lesion?", 1.0, 5, False),
    (6, "Count the lesions.", 0.5, 8, False),
]


def test_eight_concurrent_clients_are_batched_and_answered_as_one_by_one(srv):
    one_by_one = [_ask(srv, spec) for spec in SPECS]
    assert [len(requests) for requests, _ in srv.gate.calls] == [1] * 8
    srv.gate.calls.clear()
    with held(srv), ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_ask, srv, spec) for spec in SPECS]
        _wait_for(lambda: srv.service.batcher.depth == 8, "eight queued requests")
        srv.gate.open.set()
        together = [f.result(60) for f in futures]
    assert together == one_by_one
    assert sorted(len(requests) for requests, _ in srv.gate.calls) == [1, 8]  # the blocker, then all eight
    assert one_by_one[2] != one_by_one[3]  # the seed matters, so equality above is not vacuous
    text = _metrics(srv)
    buckets = {
        le: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('unimedvl_api_batch_size_bucket{task="understand"')
        for le in [line.split('le="')[1].split('"')[0]]
    }
    assert buckets["8"] - buckets["4"] >= 1  # the batch of eight is in the histogram


def test_concurrent_image_requests_are_batched_and_match_one_by_one(srv):
    specs = [("A chest X-ray.", "32x32", 1), ("An axial CT.", "48x32", 2), ("A fundus photo.", "32x32", 3)]

    def generate(spec):
        prompt, size, seed = spec
        out = _client(srv).images.generate(
            model="debug", prompt=prompt, size=size, extra_body={"seed": seed, "num_timesteps": STEPS}
        )
        return _decoded(out.data[0])

    with held(srv), ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(generate, spec) for spec in specs]
        _wait_for(lambda: srv.service.batcher.depth == 3, "three queued images")
        srv.gate.open.set()
        together = [f.result(60) for f in futures]
    assert sorted(len(requests) for requests, _ in srv.gate.calls) == [1, 3]
    for (prompt, size, seed), got in zip(specs, together):
        width, height = (int(v) for v in size.split("x"))
        alone = srv.model.generate(prompt, height=height, width=width, seed=seed, num_timesteps=STEPS)
        _close_images(got, np.asarray(alone))


# -- cancellation -----------------------------------------------------------------------------


def test_a_queued_request_whose_client_leaves_never_runs(srv):
    cancelled = srv.service.metrics.cancelled.value()
    with held(srv):
        messages = [{"role": "user", "content": "LEAVING-EARLY"}]
        stream = srv.client.chat.completions.create(model="debug", stream=True, max_tokens=5, messages=messages)
        assert next(iter(stream)).choices[0].delta.role == "assistant"  # the headers and first event came
        _wait_for(lambda: srv.service.batcher.depth == 1, "the request in the queue")
        stream.close()
        _wait_for(lambda: srv.service.metrics.cancelled.value() == cancelled + 1, "the cancellation")
        assert srv.service.batcher.depth == 0
    assert "LEAVING-EARLY" not in str([r.inputs for requests, _ in srv.gate.calls for r in requests])


def test_a_running_answer_stops_when_its_client_leaves(srv):
    gate, cancelled = srv.gate, srv.service.metrics.cancelled.value()
    gate.first_token.clear()
    gate.hold_at_first_token = threading.Event()
    try:
        messages = [{"role": "user", "content": "a long answer"}]
        stream = srv.client.chat.completions.create(
            model="debug", messages=messages, max_tokens=MAX_TOKENS, stream=True
        )
        assert gate.first_token.wait(60)  # decoding has begun
        stream.close()
        _wait_for(lambda: srv.service.metrics.cancelled.value() == cancelled + 1, "the cancellation")
    finally:
        gate.hold_at_first_token.set()
        gate.hold_at_first_token = None
    _wait_for(lambda: gate.calls, "the batch to end")
    ((_, results),) = gate.calls
    assert len(results[0].token_ids) == 1  # stopped right after the token it was paused in, not at 32


def test_metrics_count_requests_latency_and_queue(srv):
    srv.client.chat.completions.create(model="debug", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    response = httpx.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'unimedvl_api_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'unimedvl_api_request_seconds_count{route="/v1/chat/completions"}' in text
    assert "unimedvl_api_queue_depth 0" in text and "unimedvl_api_batch_seconds_bucket" in text


# -- the command ------------------------------------------------------------------------------


def test_api_help_imports_neither_torch_nor_fastapi():
    code = (
        "import sys\nfrom unimedvl.cli import main\ntry:\n    main(['api', '--help'])\nexcept SystemExit:\n"
        "    pass\nprint(sorted(m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--max-batch" in out and "--api-key" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_the_api_command_serves_a_checkpoint(api, checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "unimedvl.cli",
        "api",
        "--model",
        str(checkpoint),
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--min-image-size",
        "32",
        "--max-image-size",
        "64",
        "--vit-min-image-size",
        "56",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, process.stdout.read()
            try:
                return httpx.get(url + "/health").status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(up, "the server to start", timeout_s=120)
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert client.models.list().data[0].id == "debug"
        messages = [_user(random_image(40, 40, 0), "What is this?")]
        reply = client.chat.completions.create(model="debug", messages=messages, max_tokens=8)
        assert reply.choices[0].message.content == api.ask(random_image(40, 40, 0), "What is this?", max_new_tokens=8)
    finally:
        process.terminate()
        process.wait(30)


def test_non_finite_or_absurd_guidance_is_a_400_naming_the_field(srv):
    # Before (issue 28): a black image with status 200.
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for field, value in (("cfg_text_scale", "NaN"), ("timestep_shift", "1e308"), ("cfg_renorm_min", "Infinity")):
        body = f'{{"model": "debug", "prompt": "x-ray", "{field}": {value}}}'
        response = httpx.post(srv.url + "/v1/images/generations", content=body, headers=auth)
        assert response.status_code == 400, response.text
        assert field in response.json()["error"]["message"]


def test_fast_sampling_fields_of_an_edit_equal_the_library_and_bad_ones_are_400(srv):
    image, instruction = random_image(32, 32, 21), "Remove the noise."
    speed = {"solver": "dpm++2m", "cache": "taylorseer", "cache_interval": 2}
    out = srv.client.images.edit(
        model="debug",
        image=("scan.png", _png(image), "image/png"),
        prompt=instruction,
        extra_body={"seed": 1, "num_timesteps": 8, **speed},
    )
    expected = srv.model.edit(image, instruction, seed=1, num_timesteps=8, **speed)
    assert np.array_equal(_decoded(out.data[0]), np.asarray(expected))
    with pytest.raises(openai.BadRequestError, match="cache='fast'; choose one of none, teacache, taylorseer"):
        srv.client.images.generate(model="debug", prompt="x-ray", extra_body={"cache": "fast"})
