"""Network pieces: EDM-style U-Net, Koopman levels, the HKD module (`build`, `load`). Imports only the leaf
modules below it (atomic, inputs, version, and checkpoint, the file format), never a package above it."""
from .config import ConfigError, PRESETS, resolve_config
from .hkd import HKDModel, LevelInfo, build, karras_sigmas, load, seed_noise
from .koopman import BlockKoopman, DenseKoopman, IdentityKoopman, KoopmanLevel, randomize_generators
from .unet import SongUNet

__all__ = ["ConfigError", "PRESETS", "resolve_config", "HKDModel", "LevelInfo", "build", "load", "karras_sigmas",
           "seed_noise", "BlockKoopman", "DenseKoopman", "IdentityKoopman", "KoopmanLevel", "SongUNet",
           "randomize_generators"]
