"""hkdviz.evaluation: weights-free quality measures, `hkdviz eval`, and the statistics benchmarks share.

    classifier.py  a small CNN trained on the training labels, whose features stand in for Inception's
                   (train_classifier, load_classifier)
    quality.py     local KID, local FD, pixel SWD, class statistics, pixel statistics (never called FID)
    evaluate.py    `hkdviz eval`: HKD at 1 NFE against its teacher at several NFE on the same seeds
    statistics.py  paired block statistics (mean, standard error, how often one side is lower)
    probes.py      seed-by-seed fidelity to the teacher, and the teacher's regeneration from each sigma

Nothing heavy is imported here; names resolve on first use:

    from hkdviz.evaluation import load_classifier
    from hkdviz.evaluation.evaluate import evaluate      # (the module `evaluate` shadows a lazy name)
    result = evaluate("default", num_samples=256)
"""
from ..exports import lazy_exports

_LAZY = {
    "ImageClassifier": "classifier", "load_classifier": "classifier", "train_classifier": "classifier",
    "ClassifierError": "classifier",
    "kid": "quality", "local_fd": "quality", "sliced_wasserstein": "quality", "QualityReference": "quality",
    "QualityError": "quality",
    "format_table": "evaluate", "EvaluationError": "evaluate", "EVALUATION_FIRST_SEED": "evaluate",
    "standard_error": "statistics", "paired_summary": "statistics",
    "fidelity_probe": "probes", "regeneration_probe": "probes",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
