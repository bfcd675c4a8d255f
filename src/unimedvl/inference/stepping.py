"""Step-level batching of image requests: requests join a running denoising batch between steps.

``Inferencer.run`` serves a batch from start to end: a request that arrives one step after a
50-step batch started waits for all of it. :class:`StepBatch` keeps the image requests being
denoised as *members*, each at its own step of its own schedule, and advances all of them by one
step per :meth:`StepBatch.step`: one forward of the language model over the latent query of every
member, under the guidance branches that member needs at its current time. Between steps,
:meth:`StepBatch.admit` prepares newly arrived requests (their contexts, one prefill) and adds
their key/value rows to the shared cache, so they share the next step: the requests admitted
together have their contexts prefilled in one batch (one forward per round of ``Inferencer.prepare``).
The members that finish at the same step are VAE-decoded together (one decode per output size) and
leave.

Who shares a step: every request sampled with the reference sampler (Euler, no step cache), and
it may differ from the others in step count, guidance, SDEdit strength and output size (each
member has its own time, its own branches and its own query length in the one forward).
Requests with a fast solver or a step cache (:mod:`unimedvl.sampling`) are not stepped here
(:func:`steppable`); the HTTP batcher serves them as whole batches.

Each member's update is the reference's: the guidance formula on its branches, then
x - (t - t') v. So its image equals serving it alone to fp32 round-off (the batched products
sum in another order), like any batch of the Inferencer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unimedvl.inference.inferencer import Inferencer, Request, Result, _Job
from unimedvl.inference.velocity import _SLOTS
from unimedvl.models.packed_batch import PackedBatch, VaeImageSplit, build_packed_batch
from unimedvl.sampling import is_reference
from unimedvl.sampling.flow import GuidanceConfig, combine_guidance, sampling_schedule


def steppable(request: Request, inferencer: Inferencer) -> bool:
    """Whether ``request`` can join a step-level batch (an image request with the reference sampler)."""
    if not request.makes_image:
        return False
    return is_reference(request.guidance or inferencer.config.preset(request.task))


@dataclass
class Member:
    """One image request being denoised: its state and where its contexts sit in the shared cache."""

    request: Request
    job: _Job
    rows: list[int]  # shared cache rows of (text_uncond, cond, img_uncond) = (cfg_text, full, cfg_img)
    batch: PackedBatch  # its latent query (one sample)
    positions: list[Tensor]  # rope ids of the query per slot
    grid: tuple[int, int]
    schedule: Tensor
    x: Tensor
    step: int = 0
    passes: int = 0
    seg: Tensor = dataclasses.field(init=False)  # every token in segment 0 (combine_guidance of one image)

    def __post_init__(self) -> None:
        self.seg = torch.zeros(self.x.shape[0], dtype=torch.long, device=self.x.device)

    @property
    def guidance(self) -> GuidanceConfig:
        return self.job.guidance

    @property
    def done(self) -> bool:
        return self.step >= len(self.schedule) - 1


class StepBatch:
    """The image requests being denoised step by step (see the module docstring)."""

    def __init__(self, inferencer: Inferencer):
        self.inferencer = inferencer
        self.model = inferencer.model
        self.members: list[Member] = []
        self.cache = None  # the KV rows of every member's contexts
        self._rng = torch.Generator().manual_seed(0)
        self._special = None  # the tokenizer's special ids (from the first admission)
        self._packed: _Packed | None = None  # the members' latent queries as one batch

    @property
    def active(self) -> int:
        return len(self.members)

    def accepts(self, request: Request) -> bool:
        """Whether ``request`` is stepped here (:func:`steppable`)."""
        return steppable(request, self.inferencer)

    @torch.no_grad()
    def admit(self, requests: Sequence[Request]) -> list[Member]:
        """Prepare ``requests`` (contexts, thinking) and add them to the batch; their members, in order.

        Raises what ``Inferencer.prepare`` raises for a bad request, before any of them joins."""
        inf = self.inferencer
        plan = inf.prepare(requests)
        inf.decode_text(plan)
        stride = self.model.config.vae_image_stride
        dim = self.model.config.patch_latent_dim
        device = plan.pool.device
        self._special = plan.pool.special
        joined = []
        for job in plan.jobs:
            contexts = (job.cfg_text, job.full, job.cfg_img)
            source_rows = [c.row for c in contexts]
            if self.cache is None:
                self.cache = plan.pool.cache.select(source_rows)
                rows = list(range(3))
            else:
                rows = self.cache.adopt(plan.pool.cache, source_rows)
            grid = (job.size[0] // stride, job.size[1] // stride)
            split = VaeImageSplit(tokens=torch.zeros(grid[0] * grid[1], dim), grid=grid, noised=True, timestep=1.0)
            batch = build_packed_batch([[split]], plan.pool.special, self.model.config).to(device)
            positions = [plan.pool.positions(batch, [c.rope]) for c in contexts]
            schedule = sampling_schedule(
                job.guidance.num_timesteps, job.guidance.timestep_shift, device=device, strength=job.strength
            )
            member = Member(
                job.request, job, rows, batch, positions, grid, schedule, inf.initial_latents(job, grid, device)
            )
            self.cache.reserve(max(self.cache.lengths) + batch.sequence_length)
            joined.append(member)
        self.members.extend(joined)
        self._packed = None
        return joined

    def drop(self, member: Member) -> None:
        """Stop denoising ``member`` (its client is gone)."""
        self.members = [m for m in self.members if m is not member]
        self._compact()

    def _query(self, members: list[Member]) -> _Packed:
        """The latent queries of ``members`` packed as one batch (built once per set of members)."""
        if self._packed is None:  # reset whenever members join or leave
            splits = [
                [VaeImageSplit(tokens=torch.zeros(m.x.shape[0], m.x.shape[1]), grid=m.grid, noised=True, timestep=1.0)]
                for m in members
            ]
            device = members[0].x.device
            batch = build_packed_batch(splits, self._special, self.model.config).to(device)
            lens = [m.batch.sequence_length for m in members]
            starts = torch.tensor([0] + lens[:-1]).cumsum(0).tolist()
            self._packed = _Packed(batch, lens, starts, [m.batch.gen_mask(device) for m in members])
        return self._packed

    @torch.no_grad()
    def step(self) -> list[tuple[Member, Result]]:
        """One denoising step of every member; the members that finished, with their results.

        One embedding call for all members (their latent queries packed as one batch), then one
        forward of the language model over every (member, branch) block."""
        members = list(self.members)
        if not members:
            return []
        packed = self._query(members)
        times = [m.schedule[m.step] for m in members]
        batch = dataclasses.replace(
            packed.batch, vae_inputs=[m.x for m in members], vae_timesteps=torch.stack(times).float()
        )
        embedded, _ = self.model.embed(batch, self._rng)
        slots = tuple(
            tuple(sorted(_SLOTS.index(b) for b in m.guidance.branches_at(float(t)))) for m, t in zip(members, times)
        )
        lay = self._layout(packed, members, slots)
        out = self.model.language_model.forward_cached(
            embedded.index_select(0, lay.gather),
            lay.positions,
            self.cache,
            rows=lay.rows,
            query_lens=lay.query_lens,
            mode="full",
            write=False,
            routing=lay.routing,
        )
        velocity = self.model.llm2vae(out.index_select(0, lay.latent)).float().split(lay.counts)
        branches: list[dict[str, Tensor]] = [{} for _ in members]
        for (k, name), v in zip(lay.blocks, velocity):
            branches[k][name] = v
        for m, ss in zip(members, slots):
            m.passes += len(ss)
        for m, v in zip(members, branches):
            guided = combine_guidance(v, m.guidance, m.seg, 1)
            t, t_next = m.schedule[m.step], m.schedule[m.step + 1]
            m.x = m.x - guided * (t - t_next)
            m.step += 1
        finished = self._finish([m for m in members if m.done])
        if finished:
            done = {id(m) for m, _ in finished}
            self.members = [m for m in self.members if id(m) not in done]
            self._compact()
        return finished

    def _finish(self, done: list[Member]) -> list[tuple[Member, Result]]:
        """Decode the members that finished this step, one VAE decode per output size for all of them."""
        if not done:
            return []
        images = self.inferencer.decode_latents(torch.cat([m.x for m in done]), [m.grid for m in done])
        finished = []
        for m, image in zip(done, images):
            result = m.job.result
            result.image, result.seed, result.model_passes = image, m.job.seed, m.passes
            finished.append((m, result))
        return finished

    @staticmethod
    def _layout(packed: _Packed, members: list[Member], slots: tuple[tuple[int, ...], ...]) -> _Layout:
        """The forward's blocks (member, branch) for the branch slots each member needs now (built once per
        combination: the branches change only where a member crosses its guidance interval)."""
        if slots not in packed.layouts:
            device = members[0].x.device
            gather, positions, rows, lens, routing, latent, counts, blocks = [], [], [], [], [], [], [], []
            offset = 0
            for k, (m, member_slots) in enumerate(zip(members, slots)):
                for s in member_slots:
                    gather.append(torch.arange(packed.starts[k], packed.starts[k] + packed.lens[k], device=device))
                    positions.append(m.positions[s])
                    rows.append(m.rows[s])
                    lens.append(packed.lens[k])
                    routing.append(packed.masks[k])
                    latent.append(m.batch.vae_indexes.to(device) + offset)
                    counts.append(m.x.shape[0])
                    blocks.append((k, _SLOTS[s]))
                    offset += packed.lens[k]
            packed.layouts[slots] = _Layout(
                torch.cat(gather),
                torch.cat(positions),
                rows,
                lens,
                torch.cat(routing),
                torch.cat(latent),
                counts,
                blocks,
            )
        return packed.layouts[slots]

    def _compact(self) -> None:
        """Free the rows of members that left once they are most of the cache."""
        self._packed = None
        if not self.members:
            self.cache = None
            return
        live = [r for m in self.members for r in m.rows]
        if self.cache.num_rows >= 2 * len(live):
            self.cache = self.cache.select(live)
            for k, m in enumerate(self.members):
                m.rows = [3 * k, 3 * k + 1, 3 * k + 2]


@dataclass
class _Packed:
    """The latent queries of the current members as one packed batch, and where each member's sits."""

    batch: PackedBatch
    lens: list[int]
    starts: list[int]
    masks: list[Tensor]  # each member's routing (latent tokens to the generation expert)
    layouts: dict = dataclasses.field(default_factory=dict)  # branch slots per member -> _Layout


@dataclass
class _Layout:
    """One forward over (member, branch) blocks: which embedded rows, rope ids, cache rows, routing, latents."""

    gather: Tensor  # rows of the embedded members, one block per (member, branch)
    positions: Tensor
    rows: list[int]
    query_lens: list[int]
    routing: Tensor
    latent: Tensor  # where the latent tokens sit in the forward's output
    counts: list[int]  # latent tokens per block
    blocks: list[tuple[int, str]]  # (member index, branch name) per block
