"""The smaller failures of the second drill (issue 28, item 8): convert on a full disk, a DICOM whose
transfer syntax has no installed decoder, idle HTTP connections, a symlink loop."""

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from benchmark_fixtures import vqa_rad_release
from unimedvl.cli import main as cli_main
from unimedvl.errors import DataError


def test_convert_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import unimedvl.commands.convert as bcli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bcli, "write_jsonl", full)
    out = tmp_path / "data" / "vqa_rad.jsonl"
    status = cli_main(["convert", "--benchmark", "vqa-rad", str(vqa_rad_release(tmp_path / "src")), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(f"error: disk full while converting in {out.parent}") and "\n" not in err
    assert "free space and rerun" in err and "Traceback" not in err


def test_validate_without_decode_reports_a_transfer_syntax_without_decoder(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.pixels import get_decoder

    from unimedvl.data.validate import validate_jsonl
    from unimedvl.imaging.medical_io import image_size

    source = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "JPEGLSNearLossless_08.dcm"
    syntax = pydicom.dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    (tmp_path / "scan.dcm").write_bytes(source.read_bytes())
    with pytest.raises(DataError, match="JPEG-LS.*needs a pixel decoder that is not installed"):
        image_size(str(tmp_path / "scan.dcm"))  # from the header: nothing decoded
    record = {
        "main_task_type": "image_understanding",
        "sample_id": "a",
        "input_img": ["scan.dcm"],
        "message": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "CT"}],
    }
    (tmp_path / "test.jsonl").write_text(json.dumps(record) + "\n")
    report = validate_jsonl(tmp_path / "test.jsonl")  # no --decode
    text = json.dumps(report.__dict__, default=str)
    assert "needs a pixel decoder that is not installed" in text


def test_idle_http_connections_are_closed():
    import uvicorn

    from unimedvl.api.idle_timeout import server_options, with_timeout

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", **{**server_options(), "http": with_timeout(0.5)}
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        served = socket.create_connection(("127.0.0.1", port), timeout=10)
        served.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert served.recv(1024).startswith(b"HTTP/1.1 200")  # a real request is answered
        start = time.monotonic()
        assert idle.recv(1) == b"" and slow.recv(1024) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - start < 9
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_api_servers_use_the_idle_timeout():
    import inspect

    import unimedvl.api.server as api_server
    import unimedvl.commands.api as api_cli

    for module in (api_cli, api_server):
        assert "**server_options()" in inspect.getsource(module)


def test_a_symlink_loop_is_named_as_such(tmp_path):
    from unimedvl.data.records import read_jsonl
    from unimedvl.imaging.medical_io import load_image

    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    with pytest.raises(DataError, match="a.png: a symlink loop"):
        load_image(str(tmp_path / "a.png"))
    os.symlink(tmp_path / "loop.jsonl", tmp_path / "loop.jsonl")
    with pytest.raises(DataError, match="symlink loop"):
        list(read_jsonl(tmp_path / "loop.jsonl"))
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    with pytest.raises(DataError, match="a symlink to .*gone.png, which does not exist"):
        load_image(str(tmp_path / "dangling.png"))
