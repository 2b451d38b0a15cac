"""Network pieces: EDM-style U-Net, Koopman levels, the HKD module. Imports nothing from analysis/plot/widgets/train."""
from .config import ConfigError, PRESETS, resolve_config
from .hkd import HKDModel, LevelInfo, build, karras_sigmas, seed_noise
from .koopman import BlockKoopman, DenseKoopman, IdentityKoopman, KoopmanLevel, randomize_generators
from .unet import SongUNet

__all__ = ["ConfigError", "PRESETS", "resolve_config", "HKDModel", "LevelInfo", "build", "karras_sigmas",
           "seed_noise", "BlockKoopman", "DenseKoopman", "IdentityKoopman", "KoopmanLevel", "SongUNet",
           "randomize_generators"]
