"""Training cache: each labelled case preprocessed once, stored small, loaded without SimpleITK.

Building the cache reads a folder of BraTS-style cases (either naming scheme) through the study
loader and :func:`gliomasuite.preprocess.prepare`; the cache then holds, per case, the four
z-scored channels quantised to uint8 (steps of 1/16 standard deviation, far below MR noise) and
the label map of the same crop, each as an xz-compressed ``.npy``. A cache is about 3 MB per
case, so a cohort travels to a GPU machine, and training needs only numpy, torch and MONAI.
Loading uses ``numpy.load(allow_pickle=False)``: no code is executed from cache files.
"""

import json
import lzma
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

CACHE_VERSION = 1
QUANT_SCALE = 16.0
QUANT_OFFSET = 128.0
MANIFEST = "cache.json"


def quantise(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array * QUANT_SCALE) + QUANT_OFFSET, 0, 255).astype(np.uint8)


def dequantise(array: np.ndarray) -> np.ndarray:
    return (array.astype(np.float32) - QUANT_OFFSET) / QUANT_SCALE


def save_array(path: Path, array: np.ndarray) -> None:
    """One array as an xz-compressed ``.npy``, written under a temporary name and then renamed."""
    tmp = path.with_suffix(path.suffix + ".part")
    with lzma.open(tmp, "wb", preset=6) as f:
        np.save(f, array, allow_pickle=False)
    tmp.replace(path)


def load_array(path: Path) -> np.ndarray:
    """An array written by :func:`save_array` (no pickle: no code runs)."""
    with lzma.open(path, "rb") as f:
        return np.load(f, allow_pickle=False)


def find_cases(data_dir: Path) -> List[Path]:
    """Sub-folders of ``data_dir`` that hold a truth label map (BraTS layout: one folder per case)."""
    from ..study import find_segmentation

    return sorted(p for p in Path(data_dir).iterdir() if p.is_dir() and find_segmentation(p) is not None)


def build_cache(data_dir, cache_dir, cases: Optional[Sequence[str]] = None,
                log: Callable[[str], None] = print) -> Path:
    """Preprocess every labelled case of ``data_dir`` (or the named ``cases``) into ``cache_dir``."""
    import SimpleITK as sitk

    from ..preprocess import label_to_prepared, prepare
    from ..study import find_segmentation, load_study

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("version") not in (None, CACHE_VERSION):
        raise ValueError(f"{manifest_path} was written by another cache version; delete the folder and rebuild")
    entries: Dict[str, dict] = manifest.get("cases", {})
    folders = find_cases(Path(data_dir))
    if cases is not None:
        wanted = set(cases)
        folders = [f for f in folders if f.name in wanted]
    for i, folder in enumerate(folders):
        name = folder.name
        if name in entries and (cache_dir / entries[name]["image"]).exists():
            continue
        log(f"caching {name} ({i + 1}/{len(folders)})")
        study = load_study(folder)
        prepared = prepare(study.images)
        labels = label_to_prepared(sitk.ReadImage(str(find_segmentation(folder))), prepared)
        save_array(cache_dir / f"{name}_image.npy.xz", quantise(prepared.array))
        save_array(cache_dir / f"{name}_label.npy.xz", labels.astype(np.uint8))
        entries[name] = {"image": f"{name}_image.npy.xz", "label": f"{name}_label.npy.xz",
                         "shape": list(labels.shape),
                         "label_voxels": {str(v): int((labels == v).sum()) for v in (1, 2, 4)}}
        manifest = {"version": CACHE_VERSION, "quant_scale": QUANT_SCALE, "quant_offset": QUANT_OFFSET,
                    "cases": entries}
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return cache_dir


def cached_cases(cache_dir) -> List[str]:
    manifest = json.loads((Path(cache_dir) / MANIFEST).read_text())
    return sorted(manifest["cases"])


def load_case(cache_dir, name: str):
    """(image float32 (4, z, y, x), labels uint8 (z, y, x)) of one cached case."""
    cache_dir = Path(cache_dir)
    manifest = json.loads((cache_dir / MANIFEST).read_text())
    entry = manifest["cases"][name]
    return dequantise(load_array(cache_dir / entry["image"])), load_array(cache_dir / entry["label"])
