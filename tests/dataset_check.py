#!/usr/bin/env python3
"""End-to-end check of tools/make_dataset.py on a tiny dataset.

Builds datasets under --out DIR from three small photos (tests/data/chelsea.png
and variants made with ImageMagick, plus an exact duplicate) and two pair
sets whose dst is the src with red and blue swapped, then checks the manifest, the layout, the
photo-level split, identical geometry on both sides of a pair, determinism,
resuming, and the error messages for bad input. Prints 'N passed, M failed'
and exits non-zero on any failure.

Usage: /usr/bin/python3 tests/dataset_check.py --out DIR
"""

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "make_dataset.py"
CHELSEA = REPO / "tests" / "data" / "chelsea.png"
CROP = 32
TRAIN_CROPS = 12
VAL_PER_PHOTO = 2
CROPS_PER_PAIR = 3
# The pairs' teacher: swapping channels commutes exactly with cropping and
# resampling (negating does not: resampling rounds), so dst crops must equal
# swapped src crops bit for bit if and only if both sides were cut alike.
SWAP_RB = ["-separate", "-swap", "0,2", "-combine"]


class Checks:
    """Counts passed and failed checks; a failure prints its detail."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}")


def sh(*args):
    subprocess.run(args, check=True)


def build(out, *extra, photos, pairs_a, pairs_b, seed=1):
    """Run make_dataset.py; (exit status, stderr)."""
    args = [sys.executable, str(TOOL), "--out", str(out), "--photos", str(photos),
            "--cache", str(out.parent / "cache"), "--crop", str(CROP),
            "--train-crops", str(TRAIN_CROPS), "--val-crops-per-photo", str(VAL_PER_PHOTO),
            "--crops-per-pair", str(CROPS_PER_PAIR), "--seed", str(seed),
            "--concepts", "sepia", "--teacher", "negate=-negate",
            "--pairs", str(pairs_a), "--concept", "inverse",
            "--pairs", str(pairs_b), "--concept", "inverse-b", "--jobs", "2", *extra]
    result = subprocess.run(args, capture_output=True, text=True)
    return result.returncode, result.stderr


def make_inputs(root):
    """Photos (one a duplicate) and two pair sets in both accepted layouts."""
    photos, pairs_a, pairs_b = root / "photos", root / "pairs-a", root / "pairs-b"
    for folder in (photos, pairs_a, pairs_b / "src", pairs_b / "dst"):
        folder.mkdir(parents=True)
    shutil.copy(CHELSEA, photos / "chelsea.png")
    shutil.copy(CHELSEA, photos / "chelsea-copy.png")
    sh("convert", str(CHELSEA), "-flop", "-modulate", "100,60", str(photos / "mirror.jpg"))
    sh("convert", "rose:", "-resize", "240x160!", str(photos / "rose.png"))
    for name, geometry in (("a", "150x120+0+0"), ("b", "130x140+60+10"), ("c", "90x70+100+80")):
        src = pairs_a / f"{name}.src.png"
        sh("convert", str(CHELSEA), "-crop", geometry, "+repage", str(src))
        sh("convert", str(src), *SWAP_RB, str(pairs_a / f"{name}.dst.png"))
    for name, geometry in (("x", "120x100+20+20"), ("y", "100x100+80+40")):
        src = pairs_b / "src" / f"{name}.png"
        sh("convert", str(CHELSEA), "-crop", geometry, "+repage", str(src))
        sh("convert", str(src), *SWAP_RB, str(pairs_b / "dst" / f"{name}.png"))
    return {"photos": photos, "pairs_a": pairs_a, "pairs_b": pairs_b}


def rgb(path, *ops):
    return subprocess.run(["convert", str(path), *ops, "-depth", "8", "rgb:-"],
                          capture_output=True, check=True).stdout


def png_header(path):
    head = Path(path).read_bytes()[:26]
    return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"),
            head[24], head[25])


def tree_digests(out, splits=("train", "val")):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for split in splits for p in sorted((out / split).rglob("*.png"))}


def check_manifest(c, out):
    manifest = json.loads((out / "manifest.json").read_text())
    crops = json.loads((out / "crops.json").read_text())["crops"]
    c.check("manifest header",
            (manifest["format"], manifest["version"], manifest["crop"], manifest["seed"])
            == ("e2gan-dataset", 1, CROP, 1), manifest)
    concepts = {x["name"]: x for x in manifest["concepts"]}
    c.check("manifest concepts", list(concepts) == ["sepia", "negate", "inverse", "inverse-b"]
            and concepts["sepia"]["recipe"] == "-sepia-tone 80%"
            and concepts["negate"]["source"] == "teacher"
            and concepts["inverse"]["source"] == "pairs", manifest["concepts"])
    train, val = manifest["photos"]["train"], manifest["photos"]["val"]
    c.check("duplicate photo dropped, split by photo",
            len(train) + len(val) == 3 and not set(train) & set(val)
            and sum("chelsea" in k for k in train + val) == 1, (train, val))
    for name, pairs in (("inverse", 3), ("inverse-b", 2)):
        split = manifest["pairs"][name]
        c.check(f"pairs {name} split by pair",
                len(split["train"]) + len(split["val"]) == pairs and split["train"]
                and split["val"] and not set(split["train"]) & set(split["val"]), split)
    sources_ok = all(e["source"] in (train if e["split"] == "train" else val)
                     for e in crops if "pair" not in e)
    c.check("every photo crop comes from a photo of its split", sources_ok)
    n_pairs = {s: sum(len(manifest["pairs"][p][s]) for p in ("inverse", "inverse-b"))
               for s in ("train", "val")}
    expect = {"train": (TRAIN_CROPS, n_pairs["train"] * CROPS_PER_PAIR),
              "val": (len(val) * VAL_PER_PHOTO, n_pairs["val"] * VAL_PER_PHOTO)}
    for split, (photo_crops, pair_crops) in expect.items():
        info = manifest["splits"][split]
        counts = info["concepts"]
        c.check(f"{split} counts", len(info["ids"]) == photo_crops + pair_crops
                and counts["sepia"] == counts["negate"] == photo_crops
                and counts["inverse"] + counts["inverse-b"] == pair_crops, (info["concepts"],
                                                                            len(info["ids"])))
        c.check(f"{split} pair ids from 900000",
                sorted(i for i in info["ids"] if i >= "900000")
                == [f"{900000 + k}" for k in range(pair_crops)], info["ids"])
    return manifest, crops


def check_files(c, out, manifest, crops):
    """Exactly the listed files exist; all are 8-bit RGB PNGs of CROP x CROP."""
    expected = set()
    for e in crops:
        concepts = [e["pair"]] if "pair" in e else ["sepia", "negate"]
        expected |= {f"{e['split']}/{x}/{e['id']}.png" for x in ["src", *concepts]}
    present = set(tree_digests(out))
    c.check("pair exists iff file exists", present == expected,
            sorted(present ^ expected)[:5])
    headers = {png_header(out / p) for p in present}
    c.check("8-bit RGB PNG, crop size", headers == {(CROP, CROP, 8, 2)}, headers)
    ids = {s: set(manifest["splits"][s]["ids"]) for s in ("train", "val")}
    c.check("manifest ids match crops.json",
            all(e["id"] in ids[e["split"]] for e in crops)
            and sum(map(len, ids.values())) == len(crops))


def check_geometry(c, out, crops):
    """Each dst equals its teacher applied to its src crop, pixel for pixel."""
    bad = {"negate": [], "pairs": []}
    for e in crops:
        concept, ops, kind = ((e["pair"], SWAP_RB, "pairs") if "pair" in e
                              else ("negate", ["-negate"], "negate"))
        src, dst = (out / e["split"] / x / f"{e['id']}.png" for x in ("src", concept))
        if rgb(src, *ops) != rgb(dst):
            bad[kind].append(str(dst))
    c.check("teacher output == convert src RECIPE", not bad["negate"], bad["negate"][:3])
    c.check("pair crops cut identically on both sides", not bad["pairs"], bad["pairs"][:3])
    c.check("train crops use flips and scale jitter",
            {e["flip"] for e in crops if e["split"] == "train"} == {False, True}
            and len({e["box"][0] for e in crops if e["split"] == "train"}) > 3)


def check_rebuilds(c, root, inputs, out):
    digests = tree_digests(out)
    same = root / "same-seed"
    rc, err = build(same, **inputs)
    c.check("second build succeeds", rc == 0, err[-500:])
    again = tree_digests(same)
    c.check("same seed: identical val bytes",
            {k: v for k, v in again.items() if k.startswith("val/")}
            == {k: v for k, v in digests.items() if k.startswith("val/")})
    c.check("same seed: identical dataset", again == digests
            and (same / "crops.json").read_bytes() == (out / "crops.json").read_bytes())
    other = root / "seed-2"
    rc, err = build(other, **inputs, seed=2)
    changed = tree_digests(other, ("train",))
    c.check("different seed changes train crops", rc == 0 and any(
        changed.get(k) != v for k, v in digests.items() if k.startswith("train/src/")), err[-500:])


def check_resume(c, inputs, out):
    victim = out / "train" / "sepia" / "000003.png"
    before = victim.read_bytes()
    others = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p != victim}
    victim.unlink()
    rc, err = build(out, **inputs)
    c.check("resume rebuilds only the missing pair",
            rc == 0 and victim.exists() and victim.read_bytes() == before
            and all(p.stat().st_mtime_ns == t for p, t in others.items())
            and "teachers: 1/1" in err, err[-500:])
    rc, err = build(out, "--train-crops", str(TRAIN_CROPS + 1), **inputs)
    c.check("other crops into the same folder refused without --force",
            rc != 0 and "--force" in err, err[-300:])
    sepia = {p: p.stat().st_mtime_ns for p in (out / "train" / "sepia").iterdir()}
    negate = out / "train" / "negate" / "000000.png"
    rc, err = build(out, "--teacher", "negate=-negate -flop", **inputs)
    c.check("a changed recipe rebuilds only its concept",
            rc == 0 and rgb(negate) == rgb(out / "train" / "src" / "000000.png", "-negate", "-flop")
            and all(p.stat().st_mtime_ns == t for p, t in sepia.items()), err[-300:])


def check_errors(c, root, inputs):
    bad_pairs = root / "bad-pairs"
    bad_pairs.mkdir()
    sh("convert", "rose:", str(bad_pairs / "r.src.png"))
    sh("convert", "rose:", "-resize", "60x40!", str(bad_pairs / "r.dst.png"))
    rc, err = build(root / "bad1", **{**inputs, "pairs_a": bad_pairs})
    c.check("pair size mismatch is an error naming the file",
            rc != 0 and "r.dst.png is 60x40" in err and "Traceback" not in err, err[-300:])
    (bad_pairs / "r.dst.png").unlink()
    rc, err = build(root / "bad2", **{**inputs, "pairs_a": bad_pairs})
    c.check("pair without partner is an error naming the file",
            rc != 0 and "r.src.png has no partner" in err, err[-300:])
    rc, err = build(root / "bad3", "--concepts", "sepia,watercolour", **inputs)
    c.check("unknown concept is an error naming it",
            rc != 0 and "unknown concept 'watercolour'" in err, err[-300:])
    rc, err = build(root / "bad4", "--teacher", "big=-resize 200%", **inputs)
    c.check("a teacher that changes the size is an error",
            rc != 0 and "teacher big made a 64x64 image" in err, err[-300:])


def check_train_only_split(c):
    """Train-only photos (a curated package added later) all go to train and
    leave the validation photos exactly as they were without them."""
    spec = importlib.util.spec_from_file_location("make_dataset", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    old = [tool.Image(f"old/{i:02d}.jpg", Path(f"{i}.jpg")) for i in range(20)]
    added = [tool.Image(f"added/{i:02d}.jpg", Path(f"a{i}.jpg"), train_only=True)
             for i in range(30)]
    before_train, before_val = tool.split_photos(old, 0.15, 1)   # val: at least 4
    train, val = tool.split_photos(added[:15] + old + added[15:], 0.15, 1)
    c.check("train-only photos leave the val photos unchanged",
            [p.key for p in val] == [p.key for p in before_val] and len(val) == 4,
            f"{[p.key for p in before_val]} -> {[p.key for p in val]}")
    c.check("train-only photos all go to train",
            sorted(p.key for p in train) == sorted(p.key for p in before_train + added),
            f"{len(train)} train")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder")
    root = parser.parse_args().out.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    inputs = make_inputs(root)
    out = root / "dataset"
    c = Checks()
    rc, err = build(out, **inputs)
    c.check("build succeeds", rc == 0, err[-800:])
    if rc == 0:
        manifest, crops = check_manifest(c, out)
        check_files(c, out, manifest, crops)
        check_geometry(c, out, crops)
        check_rebuilds(c, root, inputs, out)
        check_resume(c, inputs, out)
    check_errors(c, root, inputs)
    check_train_only_split(c)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
