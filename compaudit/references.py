"""Published figures the package compares against, in one torch-free module.

Each constant names its source; ``/work/shared/REFERENCES.md`` (the project's reference
notes) quotes the tables they come from. Other modules re-export them under their old
names (``compaudit.simulate.CELEBA_TEST_JOINT``,
``compaudit.analysis.robustness.ALEXNET_ERRORS``), so either import works.
"""

from __future__ import annotations

__all__ = ["CELEBA_TEST_JOINT", "ALEXNET_ERRORS", "ALEXNET_CLEAN_ERROR"]

#: CelebA test split (19,962 images): counts of (Blond_Hair, Male, Young).
#: Source: Hooker et al., "What Do Compressed Deep Neural Networks Forget?", Table 1 (the
#: column sums # non-PIE + # PIE of each attribute combination).
CELEBA_TEST_JOINT: dict[tuple[bool, bool, bool], int] = {
    (True, True, False): 62,
    (True, True, True): 118,
    (True, False, True): 1961,
    (True, False, False): 519,
    (False, False, True): 8370,
    (False, False, False): 1397,
    (False, True, False): 2870,
    (False, True, True): 4665,
}

#: AlexNet top-1 error per ImageNet-C corruption, averaged over the 5 severities: the
#: normalizer of the corruption error CE_c. Source: Hendrycks & Dietterich, "Benchmarking
#: Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019), as
#: used by their released ImageNet-C evaluation code.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

#: AlexNet clean ImageNet top-1 error, the normalizer of the relative CE. Source: as
#: :data:`ALEXNET_ERRORS`.
ALEXNET_CLEAN_ERROR = 0.43478
