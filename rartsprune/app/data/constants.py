"""Per-channel statistics of the CIFAR-10 / CIFAR-100 training sets (as used by DARTS) and ImageNet.

A leaf module: the loaders (`datasets`) and the batch augmentation (`augment`) both read it.

Examples:
    >>> IMAGENET_MEAN
    (0.485, 0.456, 0.406)
"""

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD"]

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)
CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
