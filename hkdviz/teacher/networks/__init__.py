"""NVlabs/edm's teacher networks that hkdviz's own EDMPrecond (DDPM++, split for HKD) does not cover.

    layers.py    EDM's Conv2d with FIR resampling (fused or not) and its general UNetBlock
    song.py      SongUNet: DDPM++ and NCSN++ (fourier embedding, skip/residual encoder, skip decoder)
    dhariwal.py  DhariwalUNet: ADM (ImageNet-64, class-conditional)
    precond.py   VP, VE, iDDPM and EDM preconditionings: D(x; sigma) around one of those networks
    spec.py      plain-data description -> checked build (meta-device shapes first) -> loaded module;
                 a teacher checkpoint of such a network stores the description in config.json ("edm_network")

Every class keeps EDM's parameter names, so state dicts from EDM pickles load name for name.
"""
from .dhariwal import DhariwalUNet
from .precond import (EDM_NETWORK_KEY, NETWORKS, PRECONDITIONINGS, EDMPreconditioning, IDDPMPreconditioning,
                      Preconditioning, VEPreconditioning, VPPreconditioning, build_preconditioning, iddpm_noise_levels)
from .song import SongUNet
from .spec import NetworkSpecError, build_checked, validate_spec

__all__ = ["SongUNet", "DhariwalUNet", "Preconditioning", "VPPreconditioning", "VEPreconditioning",
           "IDDPMPreconditioning", "EDMPreconditioning", "PRECONDITIONINGS", "NETWORKS", "build_preconditioning",
           "iddpm_noise_levels", "EDM_NETWORK_KEY", "NetworkSpecError", "build_checked", "validate_spec"]
