"""Build the training cache of the shipped V-Net (vnet-brats-v1) exactly as it was built.

Real cases: every labelled case of $GLIOMASUITE_DATA/brats except the held-out validation cases
below (and Brats18_CBICA_AME_1, held out too: it did not fit the transfer size of the GPU machine we
first planned to train on, so it became an eighth validation case). Synthetic cases: three
demo-style studies (seeds 101-103; the embedded demo uses seed 0, so the demo is never trained on),
and four of the same brains without a tumour (seeds 111-114, all-zero truth: vnet-brats-v1, trained
on tumours only, found 150-270 cm3 of "tumour" in tumour-free demo brains; these teach it that a
brain may hold none). Real tumour-free brains: ``Mirrored_<case>`` for every training case whose
tumour stays in one hemisphere, that hemisphere's mirror image (``segmentation.negatives``; seven
cases; the validation cases are never mirrored into training).

    GLIOMASUITE_DATA=../shared/data .venv/bin/python tools/build_training_cache.py .trainpack/train
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "GliomaSuite"))

from gliomasuite.demo import make_demo_study  # noqa: E402
from gliomasuite.errors import GliomaSuiteError  # noqa: E402
from gliomasuite.segmentation.cache import build_cache, find_cases  # noqa: E402
from gliomasuite.segmentation.negatives import write_mirrored_case  # noqa: E402

VALIDATION = ["BraTS2021_00006", "BraTS2021_01477", "BraTS2021_01481", "Brats18_2013_3_1",
              "Brats18_CBICA_AOZ_1", "Brats18_TCIA01_201_1", "Brats18_TCIA10_628_1", "Brats18_CBICA_AME_1"]
SYNTHETIC_SEEDS = (101, 102, 103)
HEALTHY_SEEDS = (111, 112, 113, 114)


def main(cache_dir: str) -> None:
    data = Path(os.environ.get("GLIOMASUITE_DATA", "../shared/data")) / "brats"
    train = [p.name for p in find_cases(data) if p.name not in VALIDATION]
    build_cache(data, cache_dir, cases=train)
    with tempfile.TemporaryDirectory() as tmp:
        for seed, tumour in [(s, True) for s in SYNTHETIC_SEEDS] + [(s, False) for s in HEALTHY_SEEDS]:
            folder = Path(tmp) / (f"Synthetic_{seed}" if tumour else f"Healthy_{seed}")
            make_demo_study(folder, seed=seed, tumour=tumour)
            for f in folder.iterdir():  # case folder name = file prefix, as in BraTS
                f.rename(folder / f.name.replace("GliomaDemo", folder.name))
        for name in train:
            try:
                write_mirrored_case(data / name, tmp)
            except GliomaSuiteError as reason:  # tumour reaches the midline: no free hemisphere
                print(f"not mirrored: {reason}")
        build_cache(tmp, cache_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".trainpack/train")
