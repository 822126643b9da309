"""Published figures the package compares against, in one torch-free module.

Each constant names its source; ``/work/shared/REFERENCES.md`` (the project's reference
notes) quotes the tables they come from. Other modules re-export them under their old
names (``compaudit.simulate.CELEBA_TEST_JOINT``,
``compaudit.analysis.robustness.ALEXNET_ERRORS``), so either import works.
"""

from __future__ import annotations

__all__ = ["CELEBA_TEST_JOINT", "ALEXNET_ERRORS", "ALEXNET_ERRORS_BY_SEVERITY",
           "ALEXNET_CLEAN_ERROR"]

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

#: AlexNet top-1 error per ImageNet-C corruption at severities 1, 2, 3, 4, 5: the
#: normalizer of CE_c when only some severities were evaluated (CE over severities S is
#: sum_{s in S} E_{s,c} / sum_{s in S} E^AlexNet_{s,c}). Source: Hendrycks & Dietterich's
#: AlexNet evaluation, as tabulated in timm (Ross Wightman's pytorch-image-models,
#: ``timm.utils.imagenetc_alexnet_error_rates_list``); the mean of each row is the
#: published average of :data:`ALEXNET_ERRORS` (checked in tests/analysis/test_references.py).
ALEXNET_ERRORS_BY_SEVERITY: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}

#: AlexNet clean ImageNet top-1 error, the normalizer of the relative CE. Source: as
#: :data:`ALEXNET_ERRORS`.
ALEXNET_CLEAN_ERROR = 0.43478
