"""The HTTP API's parts without a server: settings, data URLs, answer splitting, Prometheus text, the batcher."""

import asyncio
import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from unimedvl.api.answers import AnswerStream, ThinkSplitter, split_answer  # noqa: E402
from unimedvl.api.batcher import Batcher, QueueFull  # noqa: E402
from unimedvl.api.errors import APIError  # noqa: E402
from unimedvl.api.metrics import ServerMetrics  # noqa: E402
from unimedvl.api.settings import ServerSettings  # noqa: E402
from unimedvl.api.uploads import image_from_data_url, parse_data_url, sniff_suffix  # noqa: E402
from unimedvl.errors import ConfigError, DataError  # noqa: E402
from unimedvl.inference.inferencer import Request, Result, split_thinking  # noqa: E402

PIXELS = 10_000


def _png_bytes(h=24, w=32, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes, mime="image/png", params="") -> str:
    return f"data:{mime}{params};base64,{base64.b64encode(data).decode()}"


# -- settings ---------------------------------------------------------------------------------


def test_settings_refuse_values_that_cannot_work():
    with pytest.raises(ConfigError, match="max_batch"):
        ServerSettings(max_batch=0)
    with pytest.raises(ConfigError, match="API key is empty"):
        ServerSettings(api_key="  ")
    assert ServerSettings(max_tokens=100).default_max_tokens == 100  # never above the cap
    assert not ServerSettings(host="0.0.0.0").local_only and ServerSettings().local_only


# -- images in requests -----------------------------------------------------------------------


def test_png_data_url_decodes_to_the_same_pixels():
    data = _png_bytes()
    image = image_from_data_url(_data_url(data), PIXELS, "img")
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize(
    "url, code",
    [
        ("https://example.org/cxr.png", "remote_url_refused"),
        ("http://127.0.0.1:8000/etc/passwd", "remote_url_refused"),
        ("file:///etc/passwd", "invalid_image_url"),
        ("/etc/passwd", "invalid_image_url"),
    ],
)
def test_remote_urls_and_paths_are_refused_without_fetching(url, code):
    with pytest.raises(APIError) as err:
        parse_data_url(url, "messages[0].content[0].image_url")
    assert err.value.status == 400 and err.value.code == code
    assert "messages[0].content[0].image_url" in err.value.message


def test_bad_data_urls_say_what_is_wrong():
    with pytest.raises(APIError, match="base64 encoded"):
        parse_data_url("data:image/png,rawbytes", "x")
    with pytest.raises(APIError, match="not valid base64"):
        parse_data_url("data:image/png;base64,@@@@", "x")
    with pytest.raises(APIError, match="not an accepted image type"):
        image_from_data_url(_data_url(b"hello", "text/plain"), PIXELS, "x")
    with pytest.raises(APIError, match="^x: not an image file"):
        image_from_data_url(_data_url(b"not a png at all", "image/png"), PIXELS, "x")


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(APIError, match="over the limit of") as err:
        image_from_data_url(_data_url(_png_bytes(200, 100)), PIXELS, "x")
    assert err.value.status == 400 and "input.png" not in err.value.message  # no server file names


def test_dicom_and_nifti_data_urls_with_view_parameters(tmp_path):
    import nibabel as nib
    from pydicom.data import get_testdata_file

    from unimedvl.imaging.medical_io import load_image

    dicom = get_testdata_file("CT_small.dcm")
    data = Path(dicom).read_bytes()
    got = image_from_data_url(_data_url(data, "application/dicom", ";window=lung"), 10**6, "x")
    assert np.array_equal(np.asarray(got), np.asarray(load_image(dicom, window="lung")))
    assert sniff_suffix(data) == ".dcm"
    volume = np.arange(20 * 24 * 6, dtype=np.float32).reshape(20, 24, 6)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    got = image_from_data_url(_data_url(path.read_bytes(), "application/x-nifti", ";slice=4"), 10**6, "x")
    assert np.array_equal(np.asarray(got), np.asarray(load_image(str(path), slice=4)))
    with pytest.raises(APIError, match="slice='two' must be an integer"):
        image_from_data_url(_data_url(path.read_bytes(), "application/x-nifti", ";slice=two"), 10**6, "x")


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "  <think> a b\n </think>  The answer is 3.  ",
        "<think>x</think>y",
        "plain answer  with  spaces ",
        "",
        "<thi",
        "<think></think> ok",
    ],
)
def test_thinking_split_agrees_with_the_library_on_well_formed_answers(text):
    fields = split_answer(text, think=True)
    assert (fields["reasoning_content"], fields["content"]) == split_thinking(text)


def test_thinking_split_is_the_same_whatever_the_pieces():
    text = " <think> look at the left lung \n</think>\n  A nodule, 5 mm.  "
    whole = split_answer(text, think=True)
    for cut in range(1, 6):
        splitter = ThinkSplitter()
        pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
        out = [p for piece in pieces for p in splitter.feed(piece)] + splitter.finish()
        joined = {"content": "", "reasoning_content": ""}
        for field, piece in out:
            joined[field] += piece
        assert joined == whole
        fields = [field for field, _ in out]
        assert fields == sorted(fields, key=lambda f: f == "content")  # all reasoning before any content


def test_answer_stream_without_thinking_is_the_decoded_text():
    vocab = {1: "Hel", 2: "lo", 3: " world"}
    stream = AnswerStream(lambda ids: "".join(vocab[i] for i in ids), think=False)
    pieces = [p for t in (1, 2, 3) for p in stream.push(t)] + stream.finish()
    assert pieces == [("content", "Hel"), ("content", "lo"), ("content", " world")]


# -- metrics ----------------------------------------------------------------------------------


def test_prometheus_text_rules():
    m = ServerMetrics()
    m.requests.inc(route='/a"b\\c', status="200")
    m.latency.observe(0.3, route="/x")
    m.latency.observe(1000.0, route="/x")  # above the last bucket: +Inf only
    text = m.render()
    assert text.endswith("\n")
    assert 'unimedvl_api_requests_total{route="/a\\"b\\\\c",status="200"} 1' in text
    assert 'unimedvl_api_request_seconds_bucket{route="/x",le="0.25"} 0' in text
    assert 'unimedvl_api_request_seconds_bucket{route="/x",le="0.5"} 1' in text
    assert 'unimedvl_api_request_seconds_bucket{route="/x",le="300"} 1' in text
    assert 'unimedvl_api_request_seconds_bucket{route="/x",le="+Inf"} 2' in text
    assert 'unimedvl_api_request_seconds_count{route="/x"} 2' in text
    assert "unimedvl_api_queue_depth 0" in text  # unlabelled series exist from the start
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names))


# -- the batcher, with a stand-in for Inferencer.run ------------------------------------------


class FakeRun:
    """Records batches; answers each request with its first input; can hold the worker at a gate."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.steps: list[int] = []  # denoising steps each batch got through
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, requests, progress):
        self.entered.set()
        assert self.gate.wait(30)
        self.batches.append([r.inputs[0] for r in requests])
        self.steps.append(0)
        for step in range(3):
            progress(step + 1, 3)
            self.steps[-1] += 1
        for r in requests:
            if r.inputs[0] == "bad":
                raise DataError("bad request")
        return [Result(text=r.inputs[0], token_ids=[1]) for r in requests]


async def _started(**kwargs) -> tuple[FakeRun, Batcher]:
    run = FakeRun()
    batcher = Batcher(run, ServerMetrics(), **{"max_batch": 3, "window_s": 0.0, "queue_size": 8, **kwargs})
    batcher.start()
    return run, batcher


async def _hold(run: FakeRun, batcher: Batcher, requests: list[Request]):
    """Submit ``requests`` and return once the worker is held inside their batch."""
    run.gate.clear()
    ticket = batcher.submit(requests, asyncio.get_running_loop())
    assert await asyncio.to_thread(run.entered.wait, 10)
    return ticket


def _texts(*names, task="understand"):
    return [Request([name], task) for name in names]


def test_batches_are_fifo_per_task_and_at_most_max_batch():
    async def scenario():
        run, batcher = await _started()
        loop = asyncio.get_running_loop()
        blocker = await _hold(run, batcher, _texts("first"))
        tickets = [batcher.submit(_texts(name), loop) for name in ("q1", "q2")]
        tickets.append(batcher.submit(_texts("g1", task="generate"), loop))
        tickets += [batcher.submit(_texts(name), loop) for name in ("q3", "q4")]
        run.gate.set()
        results = [await t.results(_never) for t in [blocker, *tickets]]
        batcher.close()
        return run.batches, [r[0].text for r in results]

    batches, texts = asyncio.run(scenario())
    assert texts == ["first", "q1", "q2", "g1", "q3", "q4"]
    # The oldest waiting item decides each batch; other tasks keep their place.
    assert batches == [["first"], ["q1", "q2", "q3"], ["g1"], ["q4"]]


def test_a_full_queue_refuses_with_a_retry_time_and_cancel_frees_it():
    async def scenario():
        run, batcher = await _started(queue_size=2)
        loop = asyncio.get_running_loop()
        await _hold(run, batcher, _texts("running"))
        waiting = batcher.submit(_texts("a", "b"), loop)
        with pytest.raises(QueueFull) as full:
            batcher.submit(_texts("c"), loop)
        waiting.cancel()  # its client left: both items leave the queue
        assert batcher.depth == 0
        later = batcher.submit(_texts("d"), loop)
        run.gate.set()
        result = await later.results(_never)
        batcher.close()
        return full.value, run.batches, result, batcher.metrics

    full, batches, result, metrics = asyncio.run(scenario())
    assert full.retry_after >= 1
    assert batches == [["running"], ["d"]]  # the cancelled ticket never ran
    assert result[0].text == "d"
    assert metrics.rejected.value() == 1 and metrics.cancelled.value() == 1


def test_one_bad_request_fails_alone():
    async def scenario():
        run, batcher = await _started(window_s=5.0)  # the three arrive within the window: one batch
        tickets = [batcher.submit(_texts(name), asyncio.get_running_loop()) for name in ("ok1", "bad", "ok2")]
        outcomes = []
        for ticket in tickets:
            try:
                outcomes.append((await ticket.results(_never))[0].text)
            except DataError as err:
                outcomes.append(str(err))
        batcher.close()
        return run.batches, outcomes

    batches, outcomes = asyncio.run(scenario())
    assert outcomes == ["ok1", "bad request", "ok2"]
    assert batches[0] == ["ok1", "bad", "ok2"]  # tried together, then one by one


def test_an_image_batch_stops_when_every_client_is_gone():
    async def scenario():
        run, batcher = await _started()
        ticket = await _hold(run, batcher, _texts("g", task="generate"))
        ticket.cancel()  # while "denoising"
        run.gate.set()
        result = await batcher.submit(_texts("after"), asyncio.get_running_loop()).results(_never)
        batcher.close()
        return run, result, ticket

    run, result, ticket = asyncio.run(scenario())
    assert run.batches == [["g"], ["after"]]
    assert run.steps == [0, 3]  # abandoned at its first step
    assert result[0].text == "after" and ticket.events.empty()  # the cancelled one got nothing


async def _never() -> bool:
    return False
