"""Per-image cost of preprocessing (decode + masks + writes) against plain decoding.

Both are measured side by side in one run on the same files, so the ratio does not depend on the
machine. Goal (issue 4): preprocessing at most 2x plain decoding.

Run: ``.venv/bin/python bench/bench_preprocess.py [FILES...]`` (defaults to the real radiographs
in ``../shared/data/real_cxr``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO_ROOT.parent / "shared" / "data" / "real_cxr"
REPEATS = 3


def _best_time(function, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> int:
    from cxr_attention.preprocess.decode import decode_image
    from cxr_attention.preprocess.masks import body_mask, lung_mask
    from cxr_attention.preprocess.pipeline import find_inputs, preprocess_image

    def decode_and_mask(path: Path) -> None:
        image, _ = decode_image(path, max_side=1024)
        lung_mask(image, body_mask(image))

    if argv:
        files = find_inputs(argv)
    else:
        folders = [DEFAULT_FOLDER / "images", DEFAULT_FOLDER / "dicom"]
        files = find_inputs([p for p in folders if p.is_dir()])
    if not files:
        print("no input files (give paths, or put ../shared/data/real_cxr beside the repo)")
        return 2
    header = ("file", "pixels", "decode s", "+masks s", "preproc s", "masks/dec", "pre/dec")
    print("{:44s} {:>11s} {:>9s} {:>9s} {:>9s} {:>9s} {:>8s}".format(*header))
    total_decode = total_masks = total_pre = 0.0
    with tempfile.TemporaryDirectory() as out:
        for path in files:
            # Interleaved per file, so that machine load affects all three alike.
            decode = _best_time(lambda p=path: decode_image(p, max_side=1024))
            masks = _best_time(lambda p=path: decode_and_mask(p))
            pre = _best_time(lambda p=path: preprocess_image(p, out, "bench", max_side=1024))
            _, meta = decode_image(path)
            size = f"{meta['source_width']}x{meta['source_height']}"
            total_decode += decode
            total_masks += masks
            total_pre += pre
            print(
                f"{path.name[:44]:44s} {size:>11s} {decode:9.3f} {masks:9.3f} {pre:9.3f} "
                f"{masks / decode:9.2f} {pre / decode:8.2f}"
            )
    print(
        f"{'total (' + str(len(files)) + ' files)':44s} {'':>11s} {total_decode:9.3f} "
        f"{total_masks:9.3f} {total_pre:9.3f} {total_masks / total_decode:9.2f} "
        f"{total_pre / total_decode:8.2f}"
    )
    print(
        f"(decode + masks) / decode: {total_masks / total_decode:.2f}; "
        f"full preprocess (decode + masks + 4 atomic writes) / decode: "
        f"{total_pre / total_decode:.2f} (goal <= 2.0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
