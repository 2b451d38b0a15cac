"""Teacher PF-ODE trajectories on disk: generation (resumable, shardable) and reading.

A trajectory set is a directory:
    trajectories.json       the manifest: count, seeds, grid, storage dtype, teacher provenance
    chunk-00000.nc ...      one netCDF file (h5netcdf) per `chunk_size` samples, variable
                            `states` (sample, time, channel, y, x); coordinates `seed` (sample),
                            `time` = `sigma` (time: T first, eps last)

Sample i has seed first_seed + i, and its x_T is exactly HKDModel.noise([seed]) / Teacher.noise,
so an HKD sample and a teacher trajectory with the same seed start from the same noise. Chunk k
holds seeds first_seed + k * chunk_size ...; under torchrun, rank r writes chunks r, r + W, ...,
so ranks never share a seed. Each chunk is written to a temporary name and renamed when complete:
a rerun skips complete chunks and redoes any chunk a kill left half-written.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import temporary_path, write_text
from ..inputs import read_json_file, require_regular_file
from ..model.hkd import seed_noise
from .common import RunLock, TrainingError
from .distributed import DistributedContext, barrier

MANIFEST_FILE = "trajectories.json"
FORMAT_VERSION = 1
STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


class TrajectoryError(TrainingError):
    """A trajectory directory that cannot be written or read; the message names the path and problem."""


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.nc"


def _teacher_parts(teacher, device):
    """(denoiser, config, provenance) from a Teacher, an EDMPrecond, or a checkpoint path/name."""
    if isinstance(teacher, (str, os.PathLike)):
        from ..teacher.teacher import load_teacher
        teacher = load_teacher(teacher, device=device)
    denoiser = getattr(teacher, "denoiser", teacher)
    config = getattr(teacher, "config", None) or getattr(denoiser, "config", None)
    if config is None:
        raise TypeError(f"the teacher needs a config (got {type(teacher).__name__}); wrap it as Teacher(denoiser, config)")
    provenance = {"checkpoint_path": getattr(teacher, "checkpoint_path", None),
                  "checkpoint_sha256": getattr(teacher, "checkpoint_sha256", None),
                  "denoiser": type(denoiser).__name__}
    return denoiser, config, provenance


def _chunk_is_complete(path: Path, expected_seeds: np.ndarray, num_states: int) -> bool:
    if not path.exists():
        return False
    require_regular_file(path, TrajectoryError, what="trajectory chunk")  # h5py would block on a FIFO
    try:
        import h5py
        with h5py.File(path, "r") as handle:
            seeds = handle["seed"][:]
            shape = handle["states"].shape
    except Exception:  # noqa: BLE001 - unreadable means "redo it"
        return False
    return np.array_equal(seeds, expected_seeds) and shape[:2] == (len(expected_seeds), num_states)


def _write_chunk(path: Path, states: np.ndarray, seeds: np.ndarray, sigmas: np.ndarray, attrs: dict) -> None:
    import xarray as xr

    dataset = xr.Dataset(
        {"states": (("sample", "time", "channel", "y", "x"), states)},
        coords={"sample": np.arange(len(seeds)) + attrs["_first_sample"], "seed": ("sample", seeds),
                "time": sigmas, "sigma": ("time", sigmas)},
        attrs={key: value for key, value in attrs.items() if not key.startswith("_")},
    )
    dataset["states"].attrs["description"] = "teacher PF-ODE states (Heun, Karras grid), T first, eps last"
    with temporary_path(path) as temporary:
        dataset.to_netcdf(temporary, engine="h5netcdf")


def generate_trajectories(teacher, out_dir, count: int, first_seed: int = 0, num_steps: int = 18,
                          chunk_size: int = 1024, batch_size: int = 256, storage_dtype: str = "float32",
                          rho: float = 7.0, device="auto", context: DistributedContext | None = None,
                          progress: bool = True, log=None, autocast_dtype: torch.dtype | None = None) -> dict:
    """Solve the teacher's PF-ODE for seeds first_seed .. first_seed + count - 1 and store every state.

    teacher: a Teacher, an EDMPrecond, or a teacher checkpoint directory/name. Resumable: existing
    complete chunks are kept (after checking the manifest matches). Returns throughput statistics
    (images, seconds, images_per_second, nfe_per_second) for the chunks this rank generated.
    The main rank holds an exclusive lock on out_dir throughout: a second generation into the same
    directory is refused at once.
    """
    from ..checkpoint import resolve_device

    context = context or DistributedContext(device=resolve_device(device))
    with RunLock(out_dir, enabled=context.is_main):
        return _generate(teacher, out_dir, count, first_seed, num_steps, chunk_size, batch_size, storage_dtype,
                         rho, context, progress, log, autocast_dtype)


def _generate(teacher, out_dir, count, first_seed, num_steps, chunk_size, batch_size, storage_dtype, rho,
              context, progress, log, autocast_dtype) -> dict:
    from tqdm.auto import tqdm

    from ..teacher.sampler import heun_nfe, karras_grid

    device = context.device
    if count < 1 or chunk_size < 1 or batch_size < 1:
        raise ValueError(f"count, chunk_size and batch_size must be >= 1 (got {count}, {chunk_size}, {batch_size})")
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    denoiser, config, provenance = _teacher_parts(teacher, device)
    if isinstance(denoiser, torch.nn.Module):
        denoiser.to(device).eval()
    if config["unet"].get("label_dim", 0):
        raise TrajectoryError("class-conditional teachers are not supported for trajectory generation yet")
    diffusion = config["diffusion"]
    from ..teacher.networks.precond import round_grid
    sigmas = round_grid(denoiser, karras_grid(num_steps, diffusion["sigma_min"], diffusion["sigma_max"], rho))
    unet = config["unet"]
    image_shape = (unet["in_channels"], unet["img_resolution"], unet["img_resolution"])
    nfe_per_image = heun_nfe(num_steps)
    num_chunks = math.ceil(count / chunk_size)
    manifest = {
        "format_version": FORMAT_VERSION, "count": int(count), "first_seed": int(first_seed),
        "num_steps": int(num_steps), "rho": float(rho), "chunk_size": int(chunk_size), "num_chunks": num_chunks,
        "storage_dtype": storage_dtype, "image_shape": list(image_shape),
        "sigma_min": float(diffusion["sigma_min"]), "sigma_max": float(diffusion["sigma_max"]),
        "nfe_per_image": nfe_per_image, "solver": "heun (EDM), final step Euler", "teacher": provenance,
    }
    if autocast_dtype is not None:
        # Recorded (and checked on resume) so one set never mixes precisions; absent = float32.
        manifest["network_autocast"] = str(autocast_dtype).replace("torch.", "")
    out_dir = Path(out_dir)
    log = log or (lambda message: None)
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_or_write_manifest(out_dir, manifest)
        for pattern in (".chunk-*.nc.*.tmp", ".chunk-*.nc.tmp-*"):  # hkdviz.atomic's names, and older ones
            for stale in out_dir.glob(pattern):
                stale.unlink()  # a chunk a kill left half-written: redone below
    barrier(context)

    mine = list(range(num_chunks))[context.rank::context.world_size]
    attrs = {"hkdviz_trajectories": json.dumps(manifest, sort_keys=True)}
    storage = STORAGE_DTYPES[storage_dtype]
    generated = 0
    elapsed = 0.0
    my_total = sum(min(chunk_size, count - index * chunk_size) for index in mine)
    bar = tqdm(total=my_total, desc=f"trajectories (rank {context.rank})" if context.enabled else "trajectories",
               unit="img", disable=not progress or not context.is_main)
    for index in mine:
        start = index * chunk_size
        seeds = np.arange(first_seed + start, first_seed + min(start + chunk_size, count), dtype=np.int64)
        path = out_dir / chunk_name(index)
        if _chunk_is_complete(path, seeds, num_steps + 1):
            bar.update(len(seeds))
            continue
        began = time.perf_counter()
        states = torch.empty((len(seeds), num_steps + 1, *image_shape), dtype=storage)
        for offset in range(0, len(seeds), batch_size):
            batch_seeds = seeds[offset:offset + batch_size].tolist()
            x_T = diffusion["sigma_max"] * seed_noise(batch_seeds, image_shape, device=device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                trajectory = _solve(denoiser, x_T, sigmas)
            states[offset:offset + len(batch_seeds)] = trajectory.to("cpu", storage)
            bar.update(len(batch_seeds))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - began
        _write_chunk(path, states.numpy(), seeds, sigmas.numpy(), {**attrs, "_first_sample": start})
        generated += len(seeds)
        elapsed += seconds
        rate = len(seeds) / max(seconds, 1e-9)
        bar.set_postfix(img_s=f"{rate:.1f}", nfe_s=f"{rate * nfe_per_image:.0f}")
        log(f"trajectories: {path.name} ({len(seeds)} samples, seeds {seeds[0]}..{seeds[-1]}) in {seconds:.1f} s: "
            f"{rate:.1f} images/s, {rate * nfe_per_image:.0f} NFE/s")
    bar.close()
    barrier(context)
    stats = {"images": generated, "seconds": elapsed, "nfe_per_image": nfe_per_image,
             "images_per_second": generated / elapsed if elapsed else None,
             "nfe_per_second": generated * nfe_per_image / elapsed if elapsed else None}
    if generated:
        log(f"trajectories: rank {context.rank} generated {generated} samples in {elapsed:.1f} s "
            f"({stats['images_per_second']:.1f} images/s, {stats['nfe_per_second']:.0f} NFE/s)")
    return stats


def _solve(denoiser, x_T: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    from ..teacher.sampler import heun_trajectory
    return heun_trajectory(denoiser, x_T, sigmas, return_all=True, output_dtype=torch.float32)


def _check_or_write_manifest(out_dir: Path, manifest: dict) -> None:
    path = out_dir / MANIFEST_FILE
    if path.exists():
        existing = read_json_file(path, TrajectoryError, what="manifest")
        if not isinstance(existing, dict):
            raise TrajectoryError(f"{path}: corrupt manifest (not a JSON object); delete the directory to regenerate")
        keys = [key for key in {**existing, **manifest} if key != "teacher"]
        differences = [f"{key}: {existing.get(key)!r} on disk vs {manifest.get(key)!r} asked"
                       for key in keys if existing.get(key) != manifest.get(key)]
        same_teacher = existing.get("teacher", {}).get("checkpoint_sha256") == manifest["teacher"]["checkpoint_sha256"]
        if not same_teacher:
            differences.append("the teacher checkpoint differs (sha256)")
        if differences:
            raise TrajectoryError(f"{out_dir} already holds a different trajectory set ({'; '.join(differences)}); "
                                  f"use another directory or delete it")
        return
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(directory) -> dict:
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise TrajectoryError(f"trajectory directory {directory} does not exist")
    if not path.exists():
        raise TrajectoryError(f"{directory}: no {MANIFEST_FILE}: not a trajectory directory (generate one with "
                              f"`hkdviz train trajectories`)")
    manifest = read_json_file(path, TrajectoryError, what="manifest")
    if not isinstance(manifest, dict):
        raise TrajectoryError(f"{path}: corrupt manifest (not a JSON object)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TrajectoryError(f"{path}: unknown format_version {manifest.get('format_version')!r}")
    return manifest


def chunk_paths(directory, require_complete: bool = True) -> list[Path]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    paths = [directory / chunk_name(index) for index in range(manifest["num_chunks"])]
    missing = [path.name for path in paths if not path.exists()]
    for path in paths:
        if path.exists():
            require_regular_file(path, TrajectoryError, what="trajectory chunk")
    if missing and require_complete:
        raise TrajectoryError(f"{directory}: trajectory set incomplete, {len(missing)} of {len(paths)} chunks missing "
                              f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); rerun the generation "
                              f"with the same settings to finish it")
    return [path for path in paths if path.exists()]


def open_trajectories(directory, require_complete: bool = True):
    """All chunks as one xarray Dataset (lazy via open_mfdataset when dask is installed, else loaded)."""
    import xarray as xr

    paths = chunk_paths(directory, require_complete)
    if not paths:
        raise TrajectoryError(f"{directory}: no trajectory chunks yet")
    try:
        import dask  # noqa: F401
        return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="sample")
    except ImportError:
        pass
    parts = []
    for path in paths:
        try:
            with xr.open_dataset(path, engine="h5netcdf") as part:
                parts.append(part.load())
        except Exception as error:  # noqa: BLE001
            raise TrajectoryError(f"{path}: unreadable trajectory chunk ({type(error).__name__}: {error})") from None
    return xr.concat(parts, dim="sample", data_vars="all", coords="different", compat="equals", join="exact")


class TrajectoryDataset(torch.utils.data.Dataset):
    """Stored trajectories for training: item i = (states float32 [K, C, H, W], sigmas float32 [K]).

    Small sets (<= memory_limit_bytes in their storage dtype) are loaded fully (`in_memory`), and
    `gather(samples, times)` then returns the requested states without touching files; larger sets
    read item by item through h5py (each DataLoader worker opens its own handles).
    """

    def __init__(self, directory, in_memory: bool | None = None, memory_limit_bytes: int = 4 << 30,
                 require_complete: bool = True, progress: bool = False):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.paths = chunk_paths(self.directory, require_complete)
        self.chunk_size = int(self.manifest["chunk_size"])
        self.num_states = int(self.manifest["num_steps"]) + 1
        self.image_shape = tuple(self.manifest["image_shape"])
        counts = [self._chunk_length(path) for path in self.paths]
        self.length = int(sum(counts))
        if self.length == 0:
            raise TrajectoryError(f"{self.directory}: no stored trajectories")
        self.sigmas = torch.from_numpy(self._read(self.paths[0], "sigma")).to(torch.float32)
        storage = STORAGE_DTYPES[self.manifest["storage_dtype"]]
        size = self.length * self.num_states * int(np.prod(self.image_shape)) * storage.itemsize
        self.in_memory = size <= memory_limit_bytes if in_memory is None else bool(in_memory)
        self.states: torch.Tensor | None = None
        self._handles: dict = {}
        self._handles_pid = None
        if self.in_memory:
            from tqdm.auto import tqdm
            self.states = torch.empty((self.length, self.num_states, *self.image_shape), dtype=storage)
            start = 0
            for path, length in zip(tqdm(self.paths, desc="loading trajectories", disable=not progress), counts):
                self.states[start:start + length] = torch.from_numpy(self._read(path, "states"))
                start += length

    def _read(self, path: Path, name: str) -> np.ndarray:
        import h5py
        try:
            with h5py.File(path, "r") as handle:
                return handle[name][:]
        except (OSError, KeyError) as error:
            raise TrajectoryError(f"{path}: unreadable trajectory chunk ({error})") from None

    def _chunk_length(self, path: Path) -> int:
        import h5py
        try:
            with h5py.File(path, "r") as handle:
                shape = handle["states"].shape
        except (OSError, KeyError) as error:
            raise TrajectoryError(f"{path}: unreadable trajectory chunk ({error})") from None
        if tuple(shape[1:]) != (self.num_states, *self.image_shape):
            raise TrajectoryError(f"{path}: states have shape {tuple(shape)}, the manifest says "
                                  f"[*, {self.num_states}, {', '.join(map(str, self.image_shape))}]")
        return int(shape[0])

    def __len__(self) -> int:
        return self.length

    def _handle(self, chunk: int):
        import h5py
        if self._handles_pid != os.getpid():  # HDF5 handles must not cross a fork
            self._handles, self._handles_pid = {}, os.getpid()
        if chunk not in self._handles:
            self._handles[chunk] = h5py.File(self.paths[chunk], "r")
        return self._handles[chunk]

    def __getitem__(self, index: int):
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"trajectory index {index} out of range for {self.length} samples")
        if self.states is not None:
            states = self.states[index]
        else:
            chunk, offset = divmod(index, self.chunk_size)
            states = torch.from_numpy(self._handle(chunk)["states"][offset])
        return states.to(torch.float32), self.sigmas.clone()

    def gather(self, samples: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """States [B, M, C, H, W] (float32) for samples [B] at time indices [B, M] (all K when None)."""
        samples = torch.as_tensor(samples, dtype=torch.long)
        if self.states is not None:
            location = self.states.device
            samples = samples.to(location)
            selected = self.states[samples] if times is None else self.states[samples.unsqueeze(1), times.to(location)]
            return selected.to(torch.float32)
        full = torch.stack([self[int(index)][0] for index in samples.tolist()])
        if times is None:
            return full
        return full[torch.arange(len(samples)).unsqueeze(1), times.cpu()]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_handles_pid"] = {}, None
        return state


__all__ = ["generate_trajectories", "open_trajectories", "TrajectoryDataset", "TrajectoryError", "read_manifest",
           "chunk_paths", "MANIFEST_FILE"]
