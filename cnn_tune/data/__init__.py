"""Which images a study learns and where they come from: the built-in sets and a folder of the
user's images (``datasets``: names, torch-free), the images in memory and the fixed split
(``images``), IDX files (``idx``), the offline sources (``mirror`` for MNIST, ``debian`` for
Fashion-MNIST), a folder's one-time conversion (``folder``) and the loading order (``load``).

May import: ``cnn_tune.errors``, ``cnn_tune.files``. Nothing here opens a study.
"""

# The modules other folders (and the tests and benchmarks) may import; the rest are this folder's own.
__all__ = ["datasets", "debian", "folder", "images", "load", "mirror"]
