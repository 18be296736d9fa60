"""The training loop: Adam + L2, lr halved on validation plateaus, early stopping, exact resume.

Deterministic given the config's seed: the model is initialised from it, every
batch is a pure function of (seed, step) (see :mod:`lowdose.training.sampler`)
and validation uses fixed patches with fixed noise. Checkpoints hold model,
optimiser, scheduler and early-stopping state, so ``resume=True`` continues with
the same losses an uninterrupted run would have produced. Under
``torch.distributed`` (set up by :func:`train` with ``world_size > 1``) the model is
wrapped in DDP, each rank streams its own slice of every global batch, and rank 0
validates, logs and writes. The rendezvous is bounded: every rank checks in on the
TCP store and waits at most ``ddp_rendezvous_timeout_s`` for the others, and each
collective fails after ``ddp_timeout_s``, so a missing or crashed rank is an error,
never a hang. torch/numpy only; never imports dask.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lowdose.config import save_config
from lowdose.errors import ConfigError, LowdoseInputError
from lowdose.models.compact import CompactUNet, widen
from lowdose.models.registry import build
from lowdose.training.checkpoint import load_checkpoint, save_checkpoint
from lowdose.training.config import TrainingConfig
from lowdose.training.data import DataSplits, resolve_splits
from lowdose.training.sampler import Augmentation, PatchSampler, validation_patches


@dataclass(frozen=True)
class TrainingResult:
    """What a finished (or early-stopped) run produced."""

    out_dir: Path
    steps: int
    best_validation_psnr_db: float
    best_step: int
    stopped_early: bool
    artefact: Path | None
    rank: int = 0
    final_state_sha256: str = ""
    """SHA-256 of the final (last-step) weights on this rank: equal on every DDP rank."""


def select_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def psnr_db(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with data range 1.0 count (estimate clipped to [0, 1])."""
    mse = (estimate.clamp(0.0, 1.0) - reference).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def validate(
    model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor, device: torch.device, chunk: int = 2
) -> float:
    """Mean PSNR (dB) of ``model`` over fixed validation patches, in eval mode."""
    was_training = model.training
    model.eval()
    scores = []
    try:
        for start in range(0, noisy.shape[0], chunk):
            estimate = model(noisy[start : start + chunk].to(device)).float()
            scores.append(psnr_db(estimate, clean[start : start + chunk].to(device)).cpu())
    finally:
        model.train(was_training)
    return float(torch.cat(scores).mean())


class DistributedTrainingError(RuntimeError):
    """The DDP ranks could not meet (rendezvous timeout) or lost each other."""


def _rendezvous_store(init_method: str, rank: int, world_size: int, timeout_s: float) -> dist.Store:
    """A TCP store from ``tcp://host:port`` (rank 0 hosts it), connecting within ``timeout_s``."""
    from urllib.parse import urlsplit

    parts = urlsplit(init_method)
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        raise ValueError(f"init_method {init_method!r}: expected tcp://HOST:PORT")
    try:
        return dist.TCPStore(
            parts.hostname,
            parts.port,
            world_size,
            is_master=rank == 0,
            timeout=timedelta(seconds=timeout_s),
            wait_for_workers=False,
        )
    except (dist.DistError, RuntimeError) as err:
        raise DistributedTrainingError(
            f"rank {rank}: cannot {'host' if rank == 0 else 'reach'} the DDP rendezvous at "
            f"{init_method} within {timeout_s:g} s ({err})"
        ) from err


def init_distributed(
    backend: str,
    rank: int,
    world_size: int,
    *,
    init_method: str | None = None,
    store: dist.Store | None = None,
    rendezvous_timeout_s: float = 300.0,
    timeout_s: float = 1800.0,
) -> None:
    """Join the ``world_size`` ranks' process group, or raise :class:`DistributedTrainingError`.

    Every rank checks in on the store and waits at most ``rendezvous_timeout_s``
    for all the others; collectives then fail after ``timeout_s`` instead of
    blocking forever on a rank that died.
    """
    if store is None:
        if init_method is None:
            raise ValueError("distributed training needs init_method or store")
        store = _rendezvous_store(init_method, rank, world_size, rendezvous_timeout_s)
    store.set(f"lowdose/rank-{rank}", "ready")
    try:
        store.wait([f"lowdose/rank-{r}" for r in range(world_size)], timedelta(seconds=rendezvous_timeout_s))
    except (dist.DistError, RuntimeError) as err:
        raise DistributedTrainingError(
            f"rank {rank}: not all {world_size} DDP ranks joined within {rendezvous_timeout_s:g} s "
            "(ddp_rendezvous_timeout_s); is every rank's worker free and able to reach rank 0?"
        ) from err
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
    )


class _Log:
    """JSON-lines log that can be truncated back to a checkpoint on resume."""

    def __init__(self, path: Path, keep_lines: int | None) -> None:
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        if keep_lines is not None:
            lines = lines[:keep_lines]
        elif lines:
            lines = []
        path.write_text("".join(line + "\n" for line in lines))
        self.lines = len(lines)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.lines += 1


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)
    assert isinstance(inner, nn.Module)
    return inner


def train(
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    rank: int = 0,
    world_size: int = 1,
    init_method: str | None = None,
    store: dist.Store | None = None,
    progress: bool = True,
    write_artefact: bool = True,
    config_path: str | None = None,
) -> TrainingResult:
    """Train ``config.model`` on ``config.data``; write checkpoints, log and artefact to ``out_dir``.

    Parameters
    ----------
    config
        The run.
    out_dir
        Output directory: ``config.yaml``, ``log.jsonl``, ``checkpoint/``,
        ``best.safetensors`` and the final artefact in ``model/``.
    resume
        Continue from ``out_dir/checkpoint`` (exactly: same subsequent losses).
    rank, world_size, init_method, store
        Distributed data parallel: this process's rank, the number of ranks and
        the rendezvous, either ``tcp://host:port`` (rank 0 hosts a TCP store
        there) or a connected ``torch.distributed`` store. Waits are bounded by
        ``config.ddp_rendezvous_timeout_s`` and ``config.ddp_timeout_s``.
    progress
        Show a tqdm bar with loss / validation PSNR / lr (rank 0 only).
    write_artefact
        Write the final model artefact (rank 0 only).
    config_path
        Where the config came from, for the reproduce commands in the model card.
    """
    out_dir = Path(out_dir)
    torch.set_num_threads(config.torch_threads)
    device = select_device(config.device)
    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        init_distributed(
            backend,
            rank,
            world_size,
            init_method=init_method,
            store=store,
            rendezvous_timeout_s=config.ddp_rendezvous_timeout_s,
            timeout_s=config.ddp_timeout_s,
        )
    if distributed and device.type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
    try:
        return _train(
            config, out_dir, resume, rank, world_size, device, progress, write_artefact, config_path
        )
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _require_splits(splits: DataSplits, config: TrainingConfig, config_path: str | None) -> None:
    """Refuse, before anything is written, a split that leaves training or validation without images."""
    total = splits.train.size + splits.validation.size + splits.test.size
    for name, images in (("training", splits.train), ("validation", splits.validation)):
        if images.size == 0:
            raise ConfigError(
                f"{config_path or config.data}: split_fractions {list(config.split_fractions)} leave the "
                f"{name} split of {config.data} empty ({total} selected images, split by structure): "
                "raise that fraction, change split_seed or simulate more structures"
            )
    height, width = splits.image_shape
    if config.patch_size > min(height, width):
        raise ConfigError(
            f"{config_path or config.data}: patch_size {config.patch_size} exceeds the images of "
            f"{config.data} ({height}×{width} px); use patch_size ≤ {min(height, width)}"
        )


def _train(
    config: TrainingConfig,
    out_dir: Path,
    resume: bool,
    rank: int,
    world_size: int,
    device: torch.device,
    progress: bool,
    write_artefact: bool,
    config_path: str | None,
) -> TrainingResult:
    from tqdm.auto import tqdm

    lead = rank == 0
    try:
        splits: DataSplits = resolve_splits(
            config.data, config.selection, config.split_fractions, config.split_seed
        )
    except ConfigError as err:  # an empty selection: name the config it came from
        raise ConfigError(f"{config_path}: {err}") if config_path else err from None
    _require_splits(splits, config, config_path)
    dose_scale = config.dose_e_per_px / splits.store_dose_e_per_px
    torch.manual_seed(config.seed)
    model = check_model(config, init=not resume).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience
    )
    state: dict[str, Any] = {"step": 0, "best_psnr_db": -math.inf, "best_step": 0, "bad_validations": 0}
    checkpoint_dir = out_dir / "checkpoint"
    if lead:
        out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        state = load_checkpoint(checkpoint_dir, model, optimizer)
        scheduler.load_state_dict(state.pop("scheduler"))
    elif lead:
        save_config(config, out_dir / "config.yaml")
    log = _Log(out_dir / "log.jsonl", state.get("log_lines") if resume else None) if lead else None
    train_model: nn.Module = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = PatchSampler(
        config.data,
        splits.train,
        config.patch_size,
        config.batch_size,
        dose_scale,
        config.seed,
        Augmentation(config.flips, config.rotation_deg, (config.scale_range[0], config.scale_range[1])),
        rank=rank,
        world_size=world_size,
        prefetch=config.prefetch,
        threads=config.loader_threads,
    )
    val_noisy, val_clean = (
        validation_patches(
            config.data,
            splits.validation,
            config.validation_patches,
            config.validation_patch_size,
            dose_scale,
            config.seed,
        )
        if lead
        else (torch.empty(0), torch.empty(0))
    )
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = int(state["step"])
    bar = tqdm(total=config.steps, initial=start, disable=not (progress and lead), desc="train", unit="step")
    stopped_early = False
    last_psnr = float("nan")
    step = start
    started = time.perf_counter()
    try:
        for step, noisy, clean in sampler.iterate(start, config.steps):
            noisy, clean = noisy.to(device, non_blocking=True), clean.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss = F.mse_loss(train_model(noisy).float(), clean)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done = step + 1
            loss_value = float(loss.detach())
            record: dict[str, Any] = {"step": done, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"]}
            stop = False
            if done % config.validate_every == 0 or done == config.steps:
                psnr = torch.tensor(validate(model, val_noisy, val_clean, device) if lead else 0.0)
                if world_size > 1:
                    dist.broadcast(psnr, src=0)
                last_psnr = float(psnr)
                scheduler.step(last_psnr)
                record["val_psnr_db"] = last_psnr
                if last_psnr > state["best_psnr_db"]:
                    state.update(best_psnr_db=last_psnr, best_step=done, bad_validations=0)
                    if lead:
                        _save_weights(model, out_dir / "best.safetensors")
                else:
                    state["bad_validations"] += 1
                stop = state["bad_validations"] >= config.early_stopping_patience
            record["elapsed_s"] = round(time.perf_counter() - started, 3)
            if log is not None:
                log.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4g}", psnr=f"{last_psnr:.2f}", lr=f"{record['lr']:.2g}")
            state["step"] = done
            if done % config.checkpoint_every == 0 or done == config.steps or stop:
                _checkpoint(lead, checkpoint_dir, model, optimizer, scheduler, state, log)
            if stop:
                stopped_early = True
                break
    finally:
        bar.close()
    if world_size > 1:
        dist.barrier()
    final_sha = _state_sha256(model)
    artefact = None
    if lead and write_artefact and (out_dir / "best.safetensors").exists():
        from safetensors.torch import load_file

        from lowdose.models.artefact import save_artefact

        model.load_state_dict(load_file(str(out_dir / "best.safetensors")))
        artefact = save_artefact(
            out_dir / "model",
            model.cpu(),
            name=config.model,
            model_config=config.model_options,
            training={
                "config": config.model_dump(mode="json"),
                "dataset_sha256": splits.dataset_sha256,
                "steps": int(state["step"]),
                "best_step": int(state["best_step"]),
                "stopped_early": stopped_early,
                "validation_psnr_db": float(state["best_psnr_db"]),
                "validation": f"{config.validation_patches} fixed {config.validation_patch_size}² patches "
                f"of the validation structures at {config.dose_e_per_px} e/px, output clipped to [0, 1]",
                "world_size": world_size,
                "split_images": {
                    "train": len(splits.train),
                    "validation": len(splits.validation),
                    "test": len(splits.test),
                },
            },
            reproduce=[f"lowdose train {config_path or out_dir / 'config.yaml'} --out {out_dir}"],
        )
    return TrainingResult(
        rank=rank,
        final_state_sha256=final_sha,
        out_dir=out_dir,
        steps=int(state["step"]),
        best_validation_psnr_db=float(state["best_psnr_db"]),
        best_step=int(state["best_step"]),
        stopped_early=stopped_early,
        artefact=artefact,
    )


def check_model(config: TrainingConfig, *, init: bool = True) -> nn.Module:
    """Build ``config``'s model and (``init``) start it from ``init_weights``.

    ``train`` builds its model with this (``init=False`` when resuming from a
    checkpoint), and ``lowdose config validate --kind train`` runs it so that unknown
    ``model_options`` and an ``init_weights`` artefact that is missing or does not fit
    the model are reported by the check too (:class:`ConfigError` naming the field).
    """
    model = build(config.model, **config.model_options)
    if init and config.init_weights is not None:
        _init_from_artefact(model, config)
    return model


def _init_from_artefact(model: nn.Module, config: TrainingConfig) -> None:
    """Copy the weights of ``config.init_weights`` into ``model`` (fine-tuning start).

    The artefact's architecture must be the config's, or a narrower ``compact`` network
    (same ``unshuffle`` and ``scales``, every level at most as wide): that one is widened
    (:func:`lowdose.models.compact.widen`, new channels seeded by ``config.seed``) so the
    run starts from its exact function.
    """
    from lowdose.models.artefact import load_model

    try:
        source, card = load_model(config.init_weights)
    except ConfigError:
        raise
    except LowdoseInputError as err:  # missing or unreadable artefact: name the field
        raise ConfigError(f"init_weights: {err}") from None
    arch = card.get("architecture") or {}
    found = (arch.get("name"), dict(arch.get("config") or {}))
    wanted = (config.model, dict(config.model_options))
    if found == wanted:
        model.load_state_dict(source.state_dict())
        return
    if (
        isinstance(source, CompactUNet)
        and isinstance(model, CompactUNet)
        and _same_but_widths(found[1], wanted[1])
    ):
        try:  # a wider compact network starts as the narrow one's exact function
            wide = widen(source, wanted[1]["base_channels"], wanted[1]["max_channels"], config.seed)
        except ValueError as err:
            raise ConfigError(f"init_weights {config.init_weights!r}: {err}") from err
        model.load_state_dict(wide.state_dict())
        return
    raise ConfigError(
        f"init_weights {config.init_weights!r}: the artefact is {found[0]} {found[1]}, "
        f"expected the config's model {wanted[0]} {wanted[1]} or a narrower compact model "
        "(same unshuffle and scales, no level wider)"
    )


def _same_but_widths(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether two compact option sets name both widths and differ in nothing else."""
    keys = {"base_channels", "max_channels"}
    if not keys <= found.keys() or not keys <= wanted.keys():
        return False
    return {k: v for k, v in found.items() if k not in keys} == {
        k: v for k, v in wanted.items() if k not in keys
    }


def _state_sha256(model: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def _checkpoint(
    lead: bool,
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    state: dict[str, Any],
    log: _Log | None,
) -> None:
    if not lead:
        return
    payload = {**state, "scheduler": scheduler.state_dict(), "log_lines": log.lines if log else 0}
    save_checkpoint(directory, model, optimizer, payload)
