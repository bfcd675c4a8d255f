"""The web app: served in-process on 127.0.0.1 with a debug checkpoint, driven through gradio_client.

One app (random debug weights, 4 timesteps, 64 px images) serves every test of the module; the
upload limit is 1 MB so that the oversize test stays small.
"""

import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from unimedvl.app.backend import Backend, Conversation, make_guidance
from unimedvl.app.presets import EDIT_PRESETS, TEXT_TO_IMAGE, AppSettings, default_steps, parse_auth
from unimedvl.app.uploads import ViewOptions, allowed_extension, check_upload, load_view
from unimedvl.errors import ConfigError, DataError, UserError

STEPS = 4
SIZE = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path: Path, seed: int, size: int = SIZE) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _nifti(path: Path) -> Path:
    import nibabel as nib

    volume = np.zeros((20, 24, 10), np.float32)
    for k in range(10):
        volume[:, :, k] = k  # slice k is constant k: the windowed slice tells which slice was read
    volume[5:15, 6:18, :] += np.arange(10, dtype=np.float32)[None, None, :] + 5
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    return path


def _multiframe_dicom(path: Path, frames: int = 3) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = frames
    pixels = np.stack([np.full((16, 16), 100 * (f + 1), np.uint16) for f in range(frames)])
    pixels[:, :8] = 0  # left half black: min..max windowing shows the right half white in every frame
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread):
    """(url, model, settings, files) of an app served for this module."""
    from unimedvl.app.ui import build_app, launch
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.inference.api import UniMedVL

    tmp = tmp_path_factory.mktemp("app")
    init_checkpoint("debug", tmp / "ckpt", seed=0)
    model = UniMedVL.from_pretrained(tmp / "ckpt", vae_min_size=32, vae_max_size=SIZE, vit_min_size=56)
    settings = AppSettings(
        host="127.0.0.1", port=_free_port(), num_timesteps=STEPS, image_size=SIZE, max_upload_mb=1.0, max_new_tokens=16
    )
    demo = build_app(model, settings, examples_dir=tmp / "examples")
    _, url, _ = launch(demo, settings, prevent_thread_lock=True)
    files = {
        "a": _png(tmp / "a.png", 1),
        "b": _png(tmp / "b.png", 2),
        "nii": _nifti(tmp / "vol.nii.gz"),
        "dcm": _multiframe_dicom(tmp / "cine.dcm"),
    }
    (tmp / "text.png").write_text("this is not an image\n")
    (tmp / "tool.exe").write_bytes(b"MZ\x90\x00" + b"\0" * 60)
    files["text_png"], files["exe"] = tmp / "text.png", tmp / "tool.exe"
    try:
        yield url, model, settings, demo, files
    finally:
        demo.close()


@pytest.fixture
def client(server):
    return Client(server[0], verbose=False)


def _chat_texts(messages) -> list[str]:
    return [part["text"] for m in messages for part in m["content"] if part.get("type") == "text"]


# ---------------------------------------------------------------------------------------------
# Each tab's main action.


def test_ask_answers_and_keeps_the_conversation(client, server):
    files = server[4]
    chat, answer, reasoning = client.predict(
        image=handle_file(str(files["a"])), question="What is shown?", max_new_tokens=8, api_name="/ask"
    )
    assert isinstance(answer, str) and reasoning == ""
    assert _chat_texts(chat)[0] == "What is shown?"
    assert any(part.get("type") == "file" for m in chat for part in m["content"])  # the image's thumbnail
    chat, _, _ = client.predict(
        image=handle_file(str(files["a"])), question="And where?", max_new_tokens=8, api_name="/ask"
    )
    texts = _chat_texts(chat)
    assert texts[0] == "What is shown?" and "And where?" in texts  # second turn of the same session
    assert sum(part.get("type") == "file" for m in chat for part in m["content"]) == 1  # same image: attached once
    chat, _, _ = client.predict(api_name="/new_conversation")
    assert chat == []


def test_ask_reads_dicom_frames_and_nifti_slices(client, server):
    files = server[4]
    _, answer, _ = client.predict(
        image=handle_file(str(files["dcm"])),
        window="minmax",
        frame=2,
        question="What is this?",
        max_new_tokens=8,
        api_name="/ask",
    )
    assert isinstance(answer, str)
    _, answer, _ = client.predict(
        image=handle_file(str(files["nii"])),
        window="minmax",
        axis=1,
        slice_index=3,
        question="What is this?",
        max_new_tokens=8,
        api_name="/ask",
    )
    assert isinstance(answer, str)
    with pytest.raises(AppError, match="frame=7"):
        client.predict(image=handle_file(str(files["dcm"])), frame=7, question="What?", api_name="/ask")


def test_edit_returns_a_png_file(client, server):
    image, download, reasoning, info = client.predict(
        image=handle_file(str(server[4]["b"])),
        instruction=EDIT_PRESETS["Denoising"].instruction,
        num_timesteps=STEPS,
        seed=3,
        api_name="/edit",
    )
    assert download.endswith(".png") and Path(download).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(download) as out:
        assert out.size == (SIZE, SIZE)
    assert Path(image).is_file() and reasoning == ""
    assert "seed 3" in info and f"{STEPS} timesteps" in info and "strength" not in info
    _, _, _, info = client.predict(
        image=handle_file(str(server[4]["b"])),
        instruction="Denoise.",
        num_timesteps=STEPS,
        strength=0.5,
        api_name="/edit",
    )
    assert "strength 0.5" in info
    _, _, _, info = client.predict(
        image=handle_file(str(server[4]["b"])),
        instruction="Denoise.",
        num_timesteps=STEPS,
        solver="heun",
        cache="taylorseer",
        api_name="/edit",
    )
    assert "heun solver" in info and "taylorseer cache" in info


def test_generate_returns_a_png_file(client):
    _, download, _, _ = client.predict(
        prompt="An axial brain MRI.", height=SIZE, width=SIZE // 2, num_timesteps=STEPS, api_name="/generate"
    )
    with Image.open(download) as out:
        assert out.format == "PNG" and out.size == (SIZE // 2, SIZE)


def test_guidance_defaults_match_the_spec(client, server):
    """The Advanced panels start at the spec's values (steps: the app's setting)."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    def defaults(endpoint):
        return {
            p["parameter_name"]: p["parameter_default"]
            for p in api[endpoint]["parameters"]
            if p.get("parameter_has_default")
        }

    edit, gen = defaults("/edit"), defaults("/generate")
    assert (edit["cfg_text"], edit["cfg_img"], edit["interval_lo"], edit["interval_hi"]) == (4.0, 2.0, 0.0, 1.0)
    assert (edit["renorm_type"], edit["shift"], edit["num_timesteps"]) == ("text_channel", 3.0, STEPS)
    assert edit["strength"] == 1.0  # the reference: sampling from pure noise
    assert (edit["solver"], edit["cache"], gen["solver"], gen["cache"]) == ("euler", "none", "euler", "none")
    assert (gen["cfg_text"], gen["cfg_img"], gen["interval_lo"], gen["interval_hi"]) == (4.0, 1.0, 0.4, 1.0)
    assert (gen["renorm_type"], gen["shift"], gen["num_timesteps"]) == ("global", 3.0, STEPS)
    for preset in EDIT_PRESETS.values():
        assert preset.guidance is None  # the checkpoint's editing preset (this debug one: the spec's)
    assert (TEXT_TO_IMAGE.cfg_interval, TEXT_TO_IMAGE.cfg_renorm_type) == ((0.4, 1.0), "global")


# ---------------------------------------------------------------------------------------------
# Safety: bad uploads, forged paths, size limit, concurrent sessions.


def test_bad_uploads_give_an_error_and_the_server_keeps_serving(client, server):
    files = server[4]
    with pytest.raises(AppError, match="not an image"):
        client.predict(image=handle_file(str(files["text_png"])), question="What?", api_name="/ask")
    with pytest.raises(AppError, match="(?i)file type"):
        client.predict(image=handle_file(str(files["exe"])), question="What?", api_name="/ask")
    with pytest.raises(AppError, match="text.png"):  # the message names the file, not the server's path
        client.predict(image=handle_file(str(files["text_png"])), instruction="Denoise.", api_name="/edit")
    with pytest.raises(AppError, match="empty"):
        client.predict(prompt="   ", api_name="/generate")
    _, answer, _ = client.predict(
        image=handle_file(str(files["a"])), question="What?", max_new_tokens=8, api_name="/ask"
    )
    assert isinstance(answer, str)


def test_oversize_upload_is_refused(client, server, tmp_path):
    big = _png(tmp_path / "big.png", 5, size=700)  # random pixels do not compress: about 1.4 MB > 1 MB limit
    assert big.stat().st_size > server[2].max_upload_mb * 1024 * 1024
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(image=handle_file(str(big)), question="What?", api_name="/ask")


def test_a_path_sent_by_a_client_is_never_opened(server):
    """A FileData that names a server file (not an upload) is refused, by gradio and by the app."""
    import httpx

    url = server[0].rstrip("/")
    forged = {"path": str(server[4]["a"]), "meta": {"_type": "gradio.FileData"}}  # exists, but was never uploaded
    data = [forged, "auto", 2, 0, 0, 0, "What?", False, 4, 0.0, 1.0, 0]
    event = httpx.post(f"{url}/gradio_api/call/ask", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}/gradio_api/call/ask/{event}", timeout=60).text
    assert "event: error" in stream and "complete" not in stream
    assert str(server[4]["a"].parent) not in stream  # gradio's "Cannot move /..." never reaches the client
    backend = server[3].unimedvl_backend
    with pytest.raises(DataError, match="only files uploaded"):
        backend.read(str(server[4]["a"]), ViewOptions())


def test_concurrent_clients_get_their_own_answers(server):
    url, files = server[0], server[4]
    jobs = {"a": "What imaging modality is this?", "b": "How many lesions are there?"}
    expected = {}
    for key, question in jobs.items():  # one at a time first: the reference answers
        _, expected[key], _ = Client(url, verbose=False).predict(
            image=handle_file(str(files[key])), question=question, max_new_tokens=8, api_name="/ask"
        )
    results, errors = {}, []

    def run(key):
        try:
            results[key] = Client(url, verbose=False).predict(
                image=handle_file(str(files[key])), question=jobs[key], max_new_tokens=8, api_name="/ask"
            )
        except Exception as err:  # reported below with the key
            errors.append((key, err))

    threads = [threading.Thread(target=run, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for key, (chat, answer, _) in results.items():
        assert answer == expected[key]
        assert _chat_texts(chat)[0] == jobs[key] and len([m for m in chat if m["role"] == "user"]) == 2


def test_examples_are_built_and_load(server):
    """Every example file (MedSynth PNGs, real DICOM/NIfTI/.npy from installed packages) previews."""
    backend = server[3].unimedvl_backend
    examples = sorted((server[3].unimedvl_workdir and Path(backend.upload_roots[-1])).iterdir())
    names = {p.name for p in examples}
    assert {"medsynth_ct_lesion.png", "medsynth_he.png", "pydicom_CT_small.dcm", "nibabel_anatomical.nii"} <= names
    for path in examples:
        image, info, meta = backend.preview(str(path), ViewOptions())
        assert image.width > 0 and path.name in info
    _, _, meta = backend.preview(str(Path(backend.upload_roots[-1]) / "pydicom_US_30frames.dcm"), ViewOptions())
    assert meta["frames"] == 30


# ---------------------------------------------------------------------------------------------
# Pieces, without the server.


def test_uploads_whitelist_and_roots(tmp_path):
    assert allowed_extension("scan.NII.GZ") == ".nii.gz" and allowed_extension("x.dcm") == ".dcm"
    assert allowed_extension("archive.tar.gz") is None and allowed_extension(".png") is None
    assert allowed_extension("virus.exe") is None and allowed_extension("notes.txt") is None
    inside = _png(tmp_path / "in.png", 0)
    assert check_upload(str(inside), [tmp_path]) == inside.resolve()
    with pytest.raises(DataError, match="only files uploaded"):
        check_upload(str(inside), [tmp_path / "uploads"])
    with pytest.raises(DataError, match="only files uploaded"):
        check_upload(str(tmp_path / "uploads" / ".." / "in.png"), [tmp_path / "uploads"])
    with pytest.raises(DataError, match="no image"):
        check_upload(None, [tmp_path])
    with pytest.raises(DataError, match="over the limit of 100 pixels"):
        load_view(inside, ViewOptions(), max_image_pixels=100)


def test_view_options_pick_window_slice_and_frame(tmp_path):
    nii, dcm = _nifti(tmp_path / "v.nii.gz"), _multiframe_dicom(tmp_path / "m.dcm", frames=3)
    middle = load_view(nii, ViewOptions(window="minmax"), 10**6)
    assert middle.meta["slice"] == 5 and middle.pixels.shape == (24, 20)
    other = load_view(nii, ViewOptions(window="minmax", axis=2, slice=2), 10**6)
    assert other.pixels.max() == 2 + 2 + 5  # slice k holds k, plus k + 5 inside the box
    assert load_view(nii, ViewOptions(axis=0, slice=3), 10**6).pixels.shape == (10, 24)
    frame = load_view(dcm, ViewOptions(window="full", frame=2), 10**6)
    assert frame.meta["frames"] == 3 and frame.pixels.max() == 300
    lung, bone = (np.asarray(load_view(dcm, ViewOptions(window=w), 10**6).to_pil()) for w in ("lung", "bone"))
    assert not np.array_equal(lung, bone)
    with pytest.raises(DataError, match="window"):
        load_view(dcm, ViewOptions(window="nonsense"), 10**6)


class _FakeChat:
    """Stands in for ChatSession: answers with the thinking split when think is on."""

    def __init__(self):
        self.think, self.images, self.questions = False, 0, []

    def attach(self, image):
        self.images += 1

    def ask(self, question, **kwargs):
        from unimedvl.inference.api import Answer

        self.questions.append(question)
        return Answer("final answer", "step 1, step 2") if self.think else "plain answer\x05"


class _FakeModel:
    def chat(self, think=False):
        chat = _FakeChat()
        chat.think = think
        return chat


def test_thinking_shows_the_reasoning_and_images_attach_once(tmp_path):
    backend = Backend(_FakeModel(), AppSettings(num_timesteps=2), [tmp_path], tmp_path / "out")
    image = str(_png(tmp_path / "x.png", 0))
    conv, text, thinking = backend.ask(None, image, ViewOptions(), "Q1", False, 8, 0.0, 1.0, 0)
    assert (text, thinking) == ("plain answer", "")
    conv, text, thinking = backend.ask(conv, image, ViewOptions(), "Q2", True, 8, 0.0, 1.0, 0)
    assert (text, thinking) == ("final answer", "step 1, step 2")
    assert isinstance(conv, Conversation) and conv.session.images == 1
    reasoning = [m for m in conv.messages if m.get("metadata", {}).get("title") == "Reasoning"]
    assert [m["content"] for m in reasoning] == ["step 1, step 2"]
    conv, _, _ = backend.ask(conv, image, ViewOptions(window="minmax"), "Q3", False, 8, 0.0, 1.0, 0)
    assert conv.session.images == 2  # another view of the file is another image
    with pytest.raises(DataError, match="empty"):
        backend.ask(conv, image, ViewOptions(), " ", False, 8, 0.0, 1.0, 0)


def test_settings_and_cli_defaults(monkeypatch):
    import argparse

    from unimedvl.commands.serve import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "ckpt"])
    assert (args.host, args.port, args.max_upload_mb, args.concurrency, args.auth) == ("127.0.0.1", 7860, 20.0, 1, None)
    assert AppSettings().host == "127.0.0.1"
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss")
    with pytest.raises(ConfigError, match="USER:PASSWORD"):
        parse_auth("nopassword")
    monkeypatch.setenv("UNIMEDVL_APP_NUM_TIMESTEPS", "7")
    assert default_steps() == 7 and AppSettings().num_timesteps == 7
    monkeypatch.setenv("UNIMEDVL_APP_NUM_TIMESTEPS", "many")
    with pytest.raises(ConfigError, match="UNIMEDVL_APP_NUM_TIMESTEPS"):
        AppSettings()
    with pytest.raises(UserError, match="renorm"):
        make_guidance("edit", 4, 2, 0, 1, "bogus", 0, 3, 10)
    fast = make_guidance("edit", 4, 2, 0, 1, "text_channel", 0, 3, 10, "dpm++2m", "teacache", 0.2, 3)
    assert (fast.solver, fast.cache, fast.cache_threshold) == ("dpm++2m", "teacache", 0.2)
    with pytest.raises(UserError, match="solver='rk4'; choose one of euler, heun, dpm"):
        make_guidance("edit", 4, 2, 0, 1, "text_channel", 0, 3, 10, "rk4")
