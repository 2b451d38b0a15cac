"""hkdviz.teacher: the EDM teacher HKD is distilled from, and the teachers it reads.

    edm.py         EDMPrecond (EDM's preconditioned DDPM++ denoiser, split like HKD's U-Net), EDMLoss,
                   init_hkd_from_teacher
    sampler.py     karras_grid, heun_trajectory (2N - 1 evaluations), states_at
    ideal.py       IdealDenoiser: the exact denoiser of a finite image set (tests, memorisation probes)
    teacher.py     Teacher (sample, trajectory, states_at, regenerate) and load_teacher
    edm_import.py  NVlabs/edm network pickles read without running their code (docs/teachers.md)
    networks/      EDM's other networks (NCSN++, ADM) and preconditionings (VP, VE, iDDPM, EDM)
    cli.py         `hkdviz teacher import|info`

Nothing heavy is imported here; names resolve on first use:

    from hkdviz.teacher import load_teacher
    teacher = load_teacher("default")                  # checkpoints/default/teacher/, or an EDM .pkl
    sigmas, states = teacher.trajectory(seeds=[0, 1])  # the PF-ODE, T first
"""
from ..exports import lazy_exports

_LAZY = {
    "EDMPrecond": "edm", "EDMLoss": "edm", "init_hkd_from_teacher": "edm",
    "Teacher": "teacher", "load_teacher": "teacher", "import_edm_teacher": "teacher",
    "karras_grid": "sampler", "heun_trajectory": "sampler",
    "IdealDenoiser": "ideal",
    "import_edm_pickle": "edm_import", "EDMImportError": "edm_import",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
