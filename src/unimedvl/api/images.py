"""``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart, as OpenAI's).

Both answer ``{"created", "data": [{"b64_json", "revised_prompt": null, "seed"}], "size",
"output_format"}``; images are never stored on the server, so ``response_format`` is
``b64_json`` only. Extension fields: ``seed`` (image ``i`` uses ``seed + i``) and the
:class:`~unimedvl.guidance.GuidanceConfig` names (``cfg_text_scale``, ``num_timesteps``, ``strength`` of an
edit, ...) over the checkpoint's preset for the task, and ``preset``, another of its presets to start
from (e.g. ``editing_fast``; ``GET /v1/models`` lists them);
in an edit they are form fields, which is where the official client puts ``extra_body``. An edit
takes one or several images (``image``, repeated ``image`` or ``image[]``) and DICOM/NIfTI view
fields (``window``, ``slice``, ...); its output has the last input image's size after the
model's resize rule unless ``size`` says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response

from unimedvl.api.batcher import ClientGone
from unimedvl.api.chat import CLIENT_GONE
from unimedvl.api.errors import bad_request
from unimedvl.api.schemas import ImageRequest
from unimedvl.api.service import Service
from unimedvl.api.uploads import VIEW_KEYS, image_from_upload, view_options
from unimedvl.inference.inferencer import Request, Result

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """(height, width) from OpenAI's "WIDTHxHEIGHT"; (None, None) for "auto" or no size."""
    if size is None or size.strip().lower() in ("", "auto"):
        return None, None
    width, sep, height = size.strip().lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise bad_request(f'size={size!r}: write it as WIDTHxHEIGHT in pixels (e.g. "512x512") or "auto"', "size")
    return int(height), int(width)


def image_requests(service: Service, body: ImageRequest, task: str, inputs: Sequence) -> list[Request]:
    """The ``n`` inference requests of an image call, checked against the server's limits."""
    settings = service.settings
    service.check_model(body.model)
    if body.n > settings.max_n:
        raise bad_request(f"n={body.n} is more than this server allows ({settings.max_n})", "n")
    if body.response_format not in (None, "b64_json"):
        raise bad_request(
            f"response_format={body.response_format!r} is not supported: images come back inline as "
            "b64_json (nothing is stored on the server)",
            "response_format",
        )
    if body.mask is not None:
        raise bad_request(
            "masked edits are not supported; leave mask out (the instruction says what to change)", "mask"
        )
    if task != "edit" and body.strength is not None and body.strength != 1:
        raise bad_request(
            f"strength={body.strength:g} starts from an input image: it is an edit setting; leave it "
            "out of a generation",
            "strength",
        )
    # The checkpoint's preset for the task (or the one the request names) with the request's fields over it.
    guidance = service.inferencer.config.guidance_for(task, body.guidance_overrides(), body.preset)
    if guidance.num_timesteps > settings.max_timesteps:
        raise bad_request(
            f"num_timesteps={guidance.num_timesteps} is more than this server allows ({settings.max_timesteps})",
            "num_timesteps",
        )
    height, width = parse_size(body.size)
    if height is not None:
        service.inferencer.check_output_size(height, width)
    return [
        Request(
            list(inputs),
            task,
            guidance=guidance,
            height=height,
            width=width,
            seed=None if body.seed is None else body.seed + i,
        )
        for i in range(body.n)
    ]


def encode_image(image: Image.Image, output_format: str) -> str:
    """The image as base64 text in ``output_format`` (png, jpeg or webp)."""
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMAT[output_format], **({"quality": 95} if output_format != "png" else {}))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _images_body(results: list[Result], output_format: str) -> dict:
    data = [{"b64_json": encode_image(r.image, output_format), "revised_prompt": None, "seed": r.seed} for r in results]
    first = results[0].image
    return {
        "created": int(time.time()),
        "data": data,
        "size": f"{first.width}x{first.height}",
        "output_format": output_format,
    }


async def _answer(service: Service, requests: list[Request], http: HTTPRequest, output_format: str) -> Response:
    ticket = service.submit(requests)
    try:
        results = await service.results(ticket, http)
    except ClientGone:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(await asyncio.to_thread(_images_body, results, output_format))


def _form_body(fields: dict[str, str]) -> ImageRequest:
    try:
        return ImageRequest.model_validate(fields)
    except ValidationError as err:  # shaped like a JSON body's errors by the error handlers
        raise RequestValidationError(err.errors()) from None


async def _edit_inputs(service: Service, files: list[UploadFile], fields: dict[str, str]) -> list[Image.Image]:
    settings = service.settings
    if not files:
        raise bad_request("an edit needs an image: send it as the multipart file field image (or image[])", "image")
    if len(files) > settings.max_images:
        raise bad_request(
            f"{len(files)} images is more than this server accepts per request ({settings.max_images})", "image"
        )
    view = view_options({k: fields[k] for k in VIEW_KEYS if k in fields}, "image")
    images = []
    for i, upload in enumerate(files):
        data = await upload.read()
        where = f"image[{i}]" if len(files) > 1 else "image"
        images.append(
            await asyncio.to_thread(
                image_from_upload, data, upload.filename, upload.content_type, view, settings.max_image_pixels, where
            )
        )
    return images


def images_router(service: Service) -> APIRouter:
    """The ``/v1/images/generations`` and ``/v1/images/edits`` routes, served by ``service``."""
    router = APIRouter()

    @router.post("/v1/images/generations")
    async def generations(body: ImageRequest, http: HTTPRequest) -> Response:
        return await _answer(
            service, image_requests(service, body, "generate", [body.prompt]), http, body.output_format
        )

    @router.post("/v1/images/edits")
    async def edits(http: HTTPRequest) -> Response:
        settings = service.settings
        if not http.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad_request("an edit is a multipart/form-data request (fields image, prompt, ...), as OpenAI's")
        form = await http.form(max_files=settings.max_images + 2, max_fields=64)
        try:
            files, fields = [], {}
            for key, value in form.multi_items():
                if key in ("image", "image[]"):
                    if not isinstance(value, UploadFile):
                        raise bad_request(f"{key} must be a file part (an image upload), not a text field", key)
                    files.append(value)
                elif key == "mask":
                    fields["mask"] = "given"  # refused below, whatever it holds
                elif isinstance(value, str):
                    fields[key] = value
            body = _form_body(fields)
            requests = image_requests(service, body, "edit", await _edit_inputs(service, files, fields) + [body.prompt])
        finally:
            await form.close()
        return await _answer(service, requests, http, body.output_format)

    return router
