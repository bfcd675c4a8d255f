"""The Gradio page: Ask, Edit / translate and Generate tabs on one loaded model.

::

    from unimedvl.app import AppSettings, build_app, launch
    demo = build_app(UniMedVL.from_pretrained("ckpt"), AppSettings(num_timesteps=20))
    launch(demo, AppSettings(port=7860))          # 127.0.0.1 unless a host is given

Every model call goes through one queue slot group (``concurrency_id="model"``, limit
``settings.concurrency``) so that concurrent users wait their turn instead of running the model
twice at once; previews of uploads use their own small pool. A session's conversation lives in its
``gr.State``; the module and the Backend hold no user data. Mistakes and failures are shown on the
page as error messages and the server keeps serving.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from unimedvl.app.backend import Backend
from unimedvl.app.examples import build_examples, generate_prompts
from unimedvl.app.presets import (
    ALLOWED_EXTENSIONS,
    ASK_TASKS,
    EDIT_PRESETS,
    GENERATE_PROMPT,
    RENORM_TYPES,
    WINDOW_CHOICES,
    AppSettings,
)
from unimedvl.app.uploads import ViewOptions, without_paths
from unimedvl.defaults import LOCAL_HOSTS, TEMPERATURE, TOP_P
from unimedvl.errors import UserError
from unimedvl.guidance import CACHE_METHODS, SOLVERS

log = logging.getLogger("unimedvl.app")

MODEL_QUEUE = "model"  # concurrency_id shared by every event that runs the model
CONVERSATION_TTL_S = 6 * 3600  # an idle session's conversation (and its KV cache) is dropped after this
MAX_INDEX = 4095  # slider range before an upload sets the file's own

CSS = """
.umv-header h1 {margin-bottom: 0.1em;}
.umv-sub {color: var(--body-text-color-subdued); font-size: 0.9em;}
.umv-info {font-size: 0.85em; color: var(--body-text-color-subdued);}
#ask-chat img {max-height: 120px; width: auto;}
/* small scans fill the frame, below the label */
.umv-fit img {width: 100%; height: 100%; object-fit: contain; padding-top: 2.4em; box-sizing: border-box;}
"""
# System fonts only: the default themes fetch web fonts from a third-party CDN, which an app that
# handles medical images should not make its users' browsers contact.
FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def _page_errors(fn: Callable) -> Callable:
    """Show UserErrors as messages on the page; log anything else and show a short notice."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as err:
            raise gr.Error(without_paths(str(err)), duration=None) from None
        except Exception as err:  # a bug or an out-of-memory must not take the server down; the log has the trace
            log.exception("request failed")
            raise gr.Error(
                without_paths(f"internal error ({type(err).__name__}: {err}); see the server log"), duration=None
            ) from None

    return wrapper


def _view(window, axis, slice_index, volume, frame, slice_known: bool = True) -> ViewOptions:
    return ViewOptions(
        window=window or "auto",
        axis=int(axis if axis is not None else 2),
        slice=int(slice_index) if slice_known and slice_index is not None else None,
        t=int(volume or 0),
        frame=int(frame or 0),
    )


# ---------------------------------------------------------------------------------------------
# The upload box with its preview and view controls (used by Ask and Edit).


@dataclass
class ImageInput:
    """An upload (gr.File) with its preview and the controls that turn a file into one 2-D image."""

    file: gr.File
    preview: gr.Image
    info: gr.Markdown
    window: gr.Dropdown
    axis: gr.Radio
    slice: gr.Slider
    volume: gr.Slider
    frame: gr.Slider

    @property
    def view_inputs(self) -> list:
        return [self.window, self.axis, self.slice, self.volume, self.frame]


def _image_input(backend: Backend, prefix: str) -> ImageInput:
    file = gr.File(
        label="Image file: PNG, JPEG, TIFF, BMP, DICOM, NIfTI, .npy",
        type="filepath",
        file_count="single",
        file_types=[*ALLOWED_EXTENSIONS, ".gz"],
        height=110,
        elem_id=f"{prefix}-file",
    )
    preview = gr.Image(
        label="What the model sees",
        type="pil",
        interactive=False,
        height=300,
        format="png",
        elem_id=f"{prefix}-preview",
        elem_classes=["umv-fit"],
    )
    info = gr.Markdown("", elem_classes=["umv-info"])
    with gr.Row():
        window = gr.Dropdown(
            WINDOW_CHOICES,
            value="auto",
            label="Window",
            allow_custom_value=True,
            scale=2,
            info="CT presets in HU, or CENTRE,WIDTH (e.g. 40,400)",
        )
        axis = gr.Radio([0, 1, 2], value=2, label="NIfTI axis", visible=False, scale=1)
    # Hidden until a file needs them; an upload sets their range to the file's. The wide initial range
    # is what API clients (which send no upload event) are checked against.
    slice_ = gr.Slider(0, MAX_INDEX, value=0, step=1, label="NIfTI slice", visible=False)
    volume = gr.Slider(0, MAX_INDEX, value=0, step=1, label="NIfTI volume (t)", visible=False)
    frame = gr.Slider(0, MAX_INDEX, value=0, step=1, label="DICOM frame", visible=False)
    box = ImageInput(file, preview, info, window, axis, slice_, volume, frame)

    def controls(meta: dict | None, axis_value: int = 2):
        """Updates for axis, slice, volume, frame matching the file's shape."""
        meta = meta or {}
        nifti, shape = meta.get("kind") == "nifti", meta.get("shape", ())
        frames = int(meta.get("frames", 1))
        return (
            gr.update(visible=nifti, value=axis_value),
            gr.update(
                visible=nifti, maximum=max(shape[axis_value] - 1, 1) if nifti else MAX_INDEX, value=meta.get("slice", 0)
            ),
            gr.update(
                visible=nifti and len(shape) == 4,
                maximum=max(shape[3] - 1, 1) if len(shape) == 4 else MAX_INDEX,
                value=meta.get("t", 0),
            ),
            gr.update(
                visible=frames > 1, maximum=max(frames - 1, 1) if frames > 1 else MAX_INDEX, value=meta.get("frame", 0)
            ),
        )

    def on_file(path, window_value):
        """A new upload: preview at its default view, controls sized to it."""
        if not path:
            return None, "", *controls(None)
        try:
            image, text, meta = backend.preview(path, ViewOptions(window=window_value or "auto"))
        except UserError as err:  # shown beside the box; the Ask/Edit buttons raise it again
            message = without_paths(str(err))
            gr.Warning(message)
            return None, f"**Cannot use this file:** {message}", *controls(None)
        return image, text, *controls(meta)

    def on_axis(path, window_value, axis_value, volume_value):
        """Another NIfTI axis: middle slice of that axis."""
        if not path:
            return None, "", gr.update(), gr.update()
        image, text, meta = backend.preview(path, _view(window_value, axis_value, None, volume_value, 0, False))
        _, slice_update, _, _ = controls(meta, int(axis_value))
        return image, text, slice_update

    def on_view(path, *view):
        if not path:
            return None, ""
        image, text, _ = backend.preview(path, _view(*view))
        return image, text

    preview_events = dict(
        concurrency_limit=4,
        concurrency_id=f"{prefix}-preview",
        api_visibility="private",
        show_progress="minimal",
        trigger_mode="always_last",
    )
    file.change(_page_errors(on_file), [file, window], [preview, info, axis, slice_, volume, frame], **preview_events)
    axis.input(_page_errors(on_axis), [file, window, axis, volume], [preview, info, slice_], **preview_events)
    for control in (slice_, volume, frame):
        control.release(_page_errors(on_view), [file, *box.view_inputs], [preview, info], **preview_events)
    window.change(_page_errors(on_view), [file, *box.view_inputs], [preview, info], **preview_events)
    return box


def _guidance_panel(defaults, steps: int, prefix: str) -> list:
    """The Advanced accordion's guidance controls, in make_guidance's order (the seed after the timesteps)."""
    with gr.Accordion("Advanced", open=False, elem_id=f"{prefix}-advanced"):
        with gr.Row():
            cfg_text = gr.Slider(1.0, 10.0, value=defaults.cfg_text_scale, step=0.5, label="Text guidance (cfg_text)")
            cfg_img = gr.Slider(1.0, 5.0, value=defaults.cfg_img_scale, step=0.25, label="Image guidance (cfg_img)")
        with gr.Row():
            lo = gr.Slider(0.0, 1.0, value=defaults.cfg_interval[0], step=0.05, label="Guidance from t >")
            hi = gr.Slider(0.0, 1.0, value=defaults.cfg_interval[1], step=0.05, label="Guidance up to t <=")
        with gr.Row():
            renorm = gr.Dropdown(list(RENORM_TYPES), value=defaults.cfg_renorm_type, label="Guidance renorm")
            renorm_min = gr.Slider(0.0, 1.0, value=defaults.cfg_renorm_min, step=0.05, label="Renorm minimum")
        with gr.Row():
            shift = gr.Slider(0.5, 6.0, value=defaults.timestep_shift, step=0.25, label="Timestep shift")
            steps_ = gr.Slider(2, 100, value=steps, step=1, label="Timesteps")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
        with gr.Row():  # fast sampling (unimedvl.sampling); Euler without a cache is the reference
            solver = gr.Dropdown(list(SOLVERS), value=defaults.solver, label="Solver")
            cache = gr.Dropdown(list(CACHE_METHODS), value=defaults.cache, label="Step cache")
            threshold = gr.Slider(
                0.01, 1.0, value=defaults.cache_threshold, step=0.01, label="Cache threshold (teacache)"
            )
            interval = gr.Slider(1, 10, value=defaults.cache_interval, step=1, label="Cache interval (taylorseer)")
    return [cfg_text, cfg_img, lo, hi, renorm, renorm_min, shift, steps_, seed, solver, cache, threshold, interval]


def _preset_choice(names: list[str], prefix: str) -> gr.Dropdown:
    """The checkpoint's guidance presets for a task (its own, then its fast variant when it has one); shown only
    when there is a choice. Picking one sets the Advanced panel to its values."""
    return gr.Dropdown(
        names,
        value=names[0],
        label="Guidance preset (the checkpoint's)",
        visible=len(names) > 1,
        elem_id=f"{prefix}-guidance-preset",
        info="a _fast preset samples with fewer passes (a solver and step cache)",
    )


def _image_outputs(prefix: str) -> tuple:
    image = gr.Image(
        label="Result",
        type="pil",
        format="png",
        interactive=False,
        height=380,
        buttons=["download", "fullscreen"],
        elem_id=f"{prefix}-result",
        elem_classes=["umv-fit"],
    )
    file = gr.File(label="Download PNG", interactive=False, elem_id=f"{prefix}-download")
    thinking = gr.Textbox(label="Reasoning", lines=4, interactive=False, visible=False)
    info = gr.Markdown("", elem_classes=["umv-info"])
    return image, file, thinking, info


def _progress_callback(progress: gr.Progress) -> Callable[[int, int], None]:
    return lambda step, total: progress((step, total), desc="denoising", unit="steps")


# ---------------------------------------------------------------------------------------------
# The page.


def _header(model, settings: AppSettings) -> str:
    net = model.model
    params = sum(p.numel() for p in net.parameters())
    first = next(net.parameters())
    size = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.1f} M"
    return (
        f"# {settings.title}\n<span class='umv-sub'>Unified medical vision-language model: answer, edit and "
        f"generate medical images. Model: {size} parameters on {first.device} ({str(first.dtype).split('.')[-1]})"
        f". Research demonstration, not for clinical use.</span>"
    )


def build_app(model, settings: AppSettings | None = None, examples_dir: str | Path | None = None) -> gr.Blocks:
    """The app for a loaded ``UniMedVL`` (queue configured; call :func:`launch` to serve it)."""
    settings = settings or AppSettings()
    workdir = tempfile.TemporaryDirectory(prefix="unimedvl-app-")  # removed when the app is collected or at exit
    root = Path(workdir.name)
    examples = []
    if settings.examples:
        examples = build_examples(examples_dir or root / "examples")
    from gradio.utils import get_upload_folder

    roots = [get_upload_folder(), root / "examples"] + ([Path(examples_dir)] if examples_dir else [])
    backend = Backend(model, settings, roots, root / "outputs")
    inferencer = model.inferencer
    stride = model.model.config.vae_image_stride
    largest = model.model.config.max_latent_size * stride
    gen_size = settings.image_size or inferencer.default_size
    # The checkpoint's presets (a demo model's: the strength and steps its report used); --num-timesteps wins.
    config = backend.inference_config
    edit_defaults, gen_defaults = config.preset("edit"), config.preset("generate")
    steps = settings.num_timesteps or edit_defaults.num_timesteps
    gen_steps = settings.num_timesteps or gen_defaults.num_timesteps
    first_preset = next(iter(EDIT_PRESETS))

    with gr.Blocks(title=settings.title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(_header(model, settings), elem_classes=["umv-header"])
        with gr.Tabs():
            # -- Ask -------------------------------------------------------------------------
            with gr.Tab("Ask", id="ask"):
                conversation = gr.State(None, time_to_live=CONVERSATION_TTL_S)
                with gr.Row():
                    with gr.Column(scale=5):
                        ask_in = _image_input(backend, "ask")
                    with gr.Column(scale=6):
                        task = gr.Dropdown(list(ASK_TASKS), value=next(iter(ASK_TASKS)), label="Task")
                        question = gr.Textbox(
                            next(iter(ASK_TASKS.values())), label="Question", lines=2, elem_id="ask-question"
                        )
                        with gr.Row():
                            think = gr.Checkbox(False, label="Thinking (show the reasoning)", scale=2)
                            ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="ask-button")
                            clear_btn = gr.Button("Clear chat", scale=1)
                        chat = gr.Chatbot(
                            label="Conversation",
                            height=320,
                            elem_id="ask-chat",
                            buttons=["copy"],
                            feedback_options=None,
                        )
                        answer = gr.Textbox(
                            label="Answer", lines=3, interactive=False, elem_id="ask-answer", buttons=["copy"]
                        )
                        reasoning = gr.Textbox(label="Reasoning", lines=4, interactive=False, visible=False)
                        with gr.Accordion("Advanced", open=False):
                            with gr.Row():
                                max_new = gr.Slider(
                                    8, 2048, value=settings.max_new_tokens, step=8, label="Max new tokens"
                                )
                                temperature = gr.Slider(
                                    0.0, 1.5, value=TEMPERATURE, step=0.05, label="Temperature (0: greedy)"
                                )
                            with gr.Row():
                                top_p = gr.Slider(0.05, 1.0, value=TOP_P, step=0.05, label="Top-p")
                                ask_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                ask_examples = [[str(e.path), e.ask_task] for e in examples if e.ask_task]
                if ask_examples:
                    gr.Examples(
                        ask_examples,
                        [ask_in.file, task],
                        label="Examples (click to load)",
                        example_labels=[e.label for e in examples if e.ask_task],
                    )

                task.change(
                    lambda name: ASK_TASKS.get(name, gr.update()), task, question, api_visibility="private", queue=False
                )
                think.change(
                    lambda on: gr.update(visible=bool(on)), think, reasoning, api_visibility="private", queue=False
                )

                def ask(
                    state,
                    image,
                    window,
                    axis,
                    slice_index,
                    volume,
                    frame,
                    question,
                    think,
                    max_new_tokens,
                    temperature,
                    top_p,
                    seed,
                ):
                    state, text, thinking = backend.ask(
                        state,
                        image,
                        _view(window, axis, slice_index, volume, frame),
                        question,
                        think,
                        max_new_tokens,
                        temperature,
                        top_p,
                        seed,
                    )
                    return state, list(state.messages), text, thinking

                ask_inputs = [
                    conversation,
                    ask_in.file,
                    *ask_in.view_inputs,
                    question,
                    think,
                    max_new,
                    temperature,
                    top_p,
                    ask_seed,
                ]
                ask_outputs = [conversation, chat, answer, reasoning]
                model_events = dict(concurrency_limit=settings.concurrency, concurrency_id=MODEL_QUEUE)
                ask_btn.click(_page_errors(ask), ask_inputs, ask_outputs, api_name="ask", **model_events)
                question.submit(_page_errors(ask), ask_inputs, ask_outputs, api_visibility="private", **model_events)
                clear_btn.click(
                    lambda: (None, [], "", ""),
                    None,
                    [conversation, chat, answer, reasoning],
                    api_name="new_conversation",
                    queue=False,
                )

            # -- Edit / translate ----------------------------------------------------------
            with gr.Tab("Edit / translate", id="edit"):
                with gr.Row():
                    with gr.Column(scale=5):
                        edit_in = _image_input(backend, "edit")
                    with gr.Column(scale=6):
                        preset = gr.Dropdown(list(EDIT_PRESETS), value=first_preset, label="Task preset")
                        instruction = gr.Textbox(EDIT_PRESETS[first_preset].instruction, label="Instruction", lines=2)
                        with gr.Row():
                            edit_think = gr.Checkbox(False, label="Thinking (reason before editing)", scale=2)
                            edit_btn = gr.Button("Run", variant="primary", scale=1, elem_id="edit-button")
                        strength = gr.Slider(
                            0.05,
                            1.0,
                            value=edit_defaults.strength,
                            step=0.05,
                            elem_id="edit-strength",
                            label="Strength: 1 draws from noise; lower starts from the input "
                            "(keeps its anatomy, changes it less, faster)",
                        )
                        edit_choice = _preset_choice(config.preset_names("edit"), "edit")
                        edit_guidance = _guidance_panel(
                            EDIT_PRESETS[first_preset].guidance or edit_defaults, steps, "edit"
                        )
                        edit_out = _image_outputs("edit")
                edit_examples = [e for e in examples if e.edit_preset]
                if edit_examples:
                    gr.Examples(
                        [[str(e.path), e.edit_preset] for e in edit_examples],
                        [edit_in.file, preset],
                        label="Examples (click to load)",
                        example_labels=[e.label for e in edit_examples],
                    )

                def on_preset(name, guidance_preset):
                    chosen = EDIT_PRESETS.get(name)
                    if chosen is None:
                        return [gr.update()] * 14
                    values = backend.panel_values("edit", guidance_preset, chosen.guidance)
                    return (chosen.instruction, *values.values())

                def on_guidance_preset(name):  # the panel shows the chosen preset (an edit sends the panel)
                    return tuple(backend.panel_values("edit", name).values())

                edit_panel = [*edit_guidance[:8], *edit_guidance[9:]]  # the values a preset sets (not the seed)
                preset.change(
                    on_preset,
                    [preset, edit_choice],
                    [instruction, *edit_panel, strength],
                    api_visibility="private",
                    queue=False,
                )
                edit_choice.change(
                    _page_errors(on_guidance_preset),
                    edit_choice,
                    [*edit_panel, strength],
                    api_visibility="private",
                    queue=False,
                )
                edit_think.change(
                    lambda on: gr.update(visible=bool(on)),
                    edit_think,
                    edit_out[2],
                    api_visibility="private",
                    queue=False,
                )

                def edit(
                    image,
                    window,
                    axis,
                    slice_index,
                    volume,
                    frame,
                    instruction,
                    think,
                    cfg_text,
                    cfg_img,
                    interval_lo,
                    interval_hi,
                    renorm_type,
                    renorm_min,
                    shift,
                    num_timesteps,
                    seed,
                    solver="euler",
                    cache="none",
                    cache_threshold=0.1,
                    cache_interval=3,
                    strength=1.0,
                    guidance_preset=None,
                    progress=gr.Progress(),
                ):
                    guidance = backend.guidance(
                        "edit",
                        cfg_text,
                        cfg_img,
                        interval_lo,
                        interval_hi,
                        renorm_type,
                        renorm_min,
                        shift,
                        num_timesteps,
                        solver,
                        cache,
                        cache_threshold,
                        cache_interval,
                        preset=guidance_preset,
                    )
                    out = backend.edit(
                        image,
                        _view(window, axis, slice_index, volume, frame),
                        instruction,
                        think,
                        guidance,
                        seed or 0,
                        _progress_callback(progress),
                        strength,
                    )
                    return out.image, str(out.png), out.thinking, out.info

                edit_inputs = [
                    edit_in.file,
                    *edit_in.view_inputs,
                    instruction,
                    edit_think,
                    *edit_guidance,
                    strength,
                    edit_choice,
                ]
                edit_btn.click(_page_errors(edit), edit_inputs, list(edit_out), api_name="edit", **model_events)

            # -- Generate --------------------------------------------------------------------
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=5):
                        prompt = gr.Textbox(GENERATE_PROMPT, label="Prompt", lines=3)
                        with gr.Row():
                            height = gr.Slider(
                                stride, max(largest, gen_size), value=gen_size, step=stride, label="Height (px)"
                            )
                            width = gr.Slider(
                                stride, max(largest, gen_size), value=gen_size, step=stride, label="Width (px)"
                            )
                        with gr.Row():
                            gen_think = gr.Checkbox(False, label="Thinking (plan the image first)", scale=2)
                            gen_btn = gr.Button("Generate", variant="primary", scale=1, elem_id="generate-button")
                        gen_choice = _preset_choice(config.preset_names("generate"), "generate")
                        gen_guidance = _guidance_panel(gen_defaults, gen_steps, "generate")
                        gr.Examples([[p] for p in generate_prompts()], [prompt], label="Example prompts")
                    with gr.Column(scale=6):
                        gen_out = _image_outputs("generate")
                gen_think.change(
                    lambda on: gr.update(visible=bool(on)), gen_think, gen_out[2], api_visibility="private", queue=False
                )

                def on_gen_preset(name):
                    return tuple(backend.panel_values("generate", name).values())

                gen_choice.change(
                    _page_errors(on_gen_preset),
                    gen_choice,
                    [*gen_guidance[:8], *gen_guidance[9:]],
                    api_visibility="private",
                    queue=False,
                )

                def generate(
                    prompt,
                    height,
                    width,
                    think,
                    cfg_text,
                    cfg_img,
                    interval_lo,
                    interval_hi,
                    renorm_type,
                    renorm_min,
                    shift,
                    num_timesteps,
                    seed,
                    solver="euler",
                    cache="none",
                    cache_threshold=0.1,
                    cache_interval=3,
                    guidance_preset=None,
                    progress=gr.Progress(),
                ):
                    guidance = backend.guidance(
                        "generate",
                        cfg_text,
                        cfg_img,
                        interval_lo,
                        interval_hi,
                        renorm_type,
                        renorm_min,
                        shift,
                        num_timesteps,
                        solver,
                        cache,
                        cache_threshold,
                        cache_interval,
                        preset=guidance_preset,
                    )
                    out = backend.generate(
                        prompt, height, width, think, guidance, seed or 0, _progress_callback(progress)
                    )
                    return out.image, str(out.png), out.thinking, out.info

                gen_btn.click(
                    _page_errors(generate),
                    [prompt, height, width, gen_think, *gen_guidance, gen_choice],
                    list(gen_out),
                    api_name="generate",
                    **model_events,
                )

    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    demo.unimedvl_workdir = workdir  # keeps the example and output folders alive as long as the app
    demo.unimedvl_backend = backend
    return demo


def launch(demo: gr.Blocks, settings: AppSettings | None = None, prevent_thread_lock: bool = False):
    """Serve ``demo`` as ``settings`` say (127.0.0.1 unless a host is given); returns gradio's (app, url, share)."""
    settings = settings or AppSettings()
    if settings.host not in LOCAL_HOSTS and settings.auth is None:
        log.warning("serving on %s without --auth: anyone who can reach this port can use the model", settings.host)
    return demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        auth=settings.auth,
        max_file_size=int(settings.max_upload_mb * 1024 * 1024),
        prevent_thread_lock=prevent_thread_lock,
        # show_error=False: gradio's own errors (e.g. "Cannot move /srv/... to the gradio cache dir" for a forged
        # file path) carry server paths; every handler here raises gr.Error with a cleaned message instead.
        show_error=False,
        quiet=prevent_thread_lock,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=["api", "settings"],
        css=CSS,
        theme=gr.themes.Soft(primary_hue="teal", font=FONTS, font_mono=MONO_FONTS),
    )
