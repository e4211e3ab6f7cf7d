"""A compact copy of ``shared/data`` for ``benchmarks/device_generalisation.sh``: a lent GPU machine takes at most
64 MiB of working tree, and the data alone is 140 MB.

- ``hubmap-pas``: each 1600x1200 JPEG halved (box filter, JPEG quality 90), its LabelMe points and recorded size
  halved with it; its µm/px (1.0 in ``benchmarks/shared-data-mpp.json``) doubled in the copied table. The recipe works at
  3 µm/px, so the models see the same tissue at the same scale, resampled twice instead of once;
- ``kidney-he``, ``pas-tiles``: the PNG photographs as JPEG quality 90 at full size (masks and GeoJSON as they are);
- ``hubmap-16x``: as it is.

    python benchmarks/compact_shared_data.py OUT     # OUT/data/<source>/..., OUT/shared-data-mpp.json (about 30 MB)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from generalisation import DATA, MPP_FILE
from PIL import Image


def halve_labelme(image: Path, annotation: Path, out_image: Path, out_annotation: Path) -> None:
    """``image`` at half size and its LabelMe file scaled with it (the recorded size checked first)."""
    picture = Image.open(image).convert("RGB")
    width, height = picture.size
    labelme = json.loads(annotation.read_text())
    if (labelme.get("imageWidth"), labelme.get("imageHeight")) != (width, height):
        raise SystemExit(f"{annotation}: records {labelme.get('imageWidth')}x{labelme.get('imageHeight')}, "
                         f"its image is {width}x{height}")
    picture.resize((width // 2, height // 2), Image.BOX).save(out_image, quality=90)
    labelme["imageWidth"], labelme["imageHeight"] = width // 2, height // 2
    for shape in labelme["shapes"]:
        shape["points"] = [[x / 2, y / 2] for x, y in shape["points"]]
    out_annotation.write_text(json.dumps(labelme))


def compact(out: Path, data: Path = DATA) -> None:
    target = out / "data"
    shutil.copytree(data / "hubmap-16x", target / "hubmap-16x")
    for sub in ("images", "annotations"):
        (target / "hubmap-pas" / sub).mkdir(parents=True)
    for image in sorted((data / "hubmap-pas" / "images").glob("*.jpg")):
        halve_labelme(image, data / "hubmap-pas" / "annotations" / f"{image.stem}.json",
                      target / "hubmap-pas" / "images" / image.name,
                      target / "hubmap-pas" / "annotations" / f"{image.stem}.json")
    for source, labels in (("kidney-he", "annotations"), ("pas-tiles", "masks")):
        shutil.copytree(data / source / labels, target / source / labels)
        (target / source / "images").mkdir()
        for image in sorted((data / source / "images").iterdir()):
            Image.open(image).convert("RGB").save(target / source / "images" / f"{image.stem}.jpg", quality=90)
    mpp = json.loads(MPP_FILE.read_text())
    mpp["hubmap-pas"] = mpp["hubmap-pas"] * 2
    (out / "shared-data-mpp.json").write_text(json.dumps(mpp, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder (inside the repository, git-ignored, to travel)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; give a new folder")
    compact(args.out)


if __name__ == "__main__":
    main()
