"""The real photographs that ship inside installed packages: nothing here downloads anything.

They come from scikit-image's bundled data and scikit-learn's `load_sample_images()` (both core
dependencies). The demo, the trainer and the fit script use them when no images are given.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

_SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "stereo_motorcycle",
)


def sample_photographs() -> Dict[str, np.ndarray]:
    """Real colour photographs, `{name: uint8 array [H, W, 3]}`, sorted by name.

    Raises `ImportError` naming the missing package when neither scikit-image nor scikit-learn is
    installed (both are core dependencies).
    """
    photos: Dict[str, np.ndarray] = {}
    try:
        import skimage.data
    except ImportError:
        skimage = None
    else:
        for name in _SKIMAGE_PHOTOS:
            loader = getattr(skimage.data, name, None)
            if loader is None:
                continue
            try:
                image = loader()
            except Exception:  # a data file that is not bundled would need a download: skip it
                continue
            image = image[0] if isinstance(image, tuple) else image  # stereo pairs: left view
            photos[name] = np.ascontiguousarray(image[..., :3])
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        pass
    else:
        bundle = load_sample_images()
        for filename, image in zip(bundle.filenames, bundle.images):
            name = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            photos[name] = np.ascontiguousarray(image)
    if not photos:
        raise ImportError("sample photographs need scikit-image or scikit-learn: pip install scikit-image scikit-learn")
    return dict(sorted(photos.items()))
