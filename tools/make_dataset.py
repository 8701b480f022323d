#!/usr/bin/env python3
"""Build the E²GAN paired-image dataset: photo crops and their teachers' edits.

Sources are photographs, from Debian packages (fetched with `apt-get download`
and unpacked with `dpkg -x`, never installed) or from folders, and ready-made
(src, dst) pairs from any teacher, e.g. a diffusion editor. Photos are split
into train and val by photo, cut into fixed-size crops (random with scale
jitter and flips for train, fixed views for val), and every teacher concept is
one ImageMagick command applied to each source crop:

    convert SPLIT/src/ID.png RECIPE SPLIT/CONCEPT/ID.png

The output layout, the curation of the photo packages and the measured cost
are described in docs/data.md, with the rules the data follows.

Standard library only; ImageMagick (`convert`, `identify`) does all image work.
"""

import argparse
import concurrent.futures
import fnmatch
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BASE_CONCEPTS = {
    "oil-paint": "-paint 2",
    "charcoal": "-charcoal 1",
    "sepia": "-sepia-tone 80%",
    "pop-art": "-posterize 4 -modulate 100,170",
    "winter": "-modulate 120,30,100 -fill #d8e8ff -colorize 30%",
    "night": "-modulate 40,70,100 -fill #0b1d5a -colorize 40% -gamma 0.9",
    "vivid": "-unsharp 0x4+1.2+0 -modulate 100,150 -sigmoidal-contrast 4x50%",
    "thermal": "-colorspace gray -normalize ( -size 1x256 gradient:navy-blue"
               " gradient:blue-yellow gradient:yellow-red -append ) -clut",
}
NEW_CONCEPTS = {
    "cartoon": "-kuwahara 2 -modulate 100,140",
    "pencil": "-seed 1 -colorspace gray -sketch 0x8+120",
    "line-art": "-colorspace gray -edge 1 -negate -normalize",
}
CONCEPT_SETS = {"base": BASE_CONCEPTS, "new": NEW_CONCEPTS,
                "all": {**BASE_CONCEPTS, **NEW_CONCEPTS}, "none": {}}

KEEP, SKIP = True, False


@dataclass(frozen=True)
class Curation:
    """Which files of a photo package are photographs.

    `rules` are (glob on the path below `root`, KEEP or SKIP, why); the first
    match decides, and a file no rule matches is skipped with a warning.
    `one_per` is a regex whose first group names a picture shipped in several
    sizes: of those only the widest one at most 2560 pixels wide is kept.
    `version` is the package version the rules were written against, by
    looking at every image.  `train_only` photos never enter the photo split
    and all go to train: such a package was added after the validation photos
    were fixed, so the validation set stays the one every shipped model was
    measured on.
    """
    version: str
    root: str
    rules: tuple
    one_per: str = ""
    train_only: bool = False


PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour",
                 "EveningGlow", "FallenLeaf", "Grey", "Kite", "OneStandsOut",
                 "Path", "summer_1am")
SCRATCH_NOT_PHOTOS = ("Indoors/chalkboard.jpg", "Indoors/party-room.jpg",
                      "Indoors/room?.jpg", "Indoors/spotlight-stage.jpg",
                      "Nature/woods-and-bench.jpg", "Outdoors/brick-wall1.jpg",
                      "Outdoors/school2.jpg", "Outdoors/*mural*.jpg",
                      "Outdoors/graffiti.jpg", "Sports/basketball-court1-a.jpg")
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                  "motorcycle_left.png")

# Left out after looking at every image: ukui-wallpapers 20.04.3-1.1 (its
# "landscapes, city, animals" are all vector illustrations) and
# gnome-backgrounds 43.1 (only rendered patterns, gradients and SVG art).
# Added to the five packages first surveyed (docs/data.md):
# lomiri-wallpapers-16.04/-20.04, Ubuntu's wallpaper-contest photographs,
# which double the number of photos.  Added later, for variety (people,
# rooms, streets), train-only and used only when named with --packages:
# kphotoalbum's demo album and scratch's photo backgrounds.
PHOTO_PACKAGES = {
    "mate-backgrounds": Curation("1.26.0-1", "usr/share/backgrounds/mate", (
        ("nature/*.jpg", KEEP, "close-up and landscape photographs"),
        ("*", SKIP, "desktop/ and abstract/: logos, gradients, a painting"),
    )),
    "plasma-workspace-wallpapers": Curation(
        "4:5.27.5-2", "usr/share/wallpapers",
        tuple((name + "/contents/images/*", KEEP, "photograph")
              for name in PLASMA_PHOTOS) + (
            ("*", SKIP, "rendered or illustrated art, screenshots, dark variants"),),
        one_per=r"^([^/]+)/contents/images/"),
    "python3-skimage": Curation(
        "0.19.3-8", "usr/lib/python3/dist-packages/skimage/data",
        tuple((name, KEEP, "colour photograph") for name in SKIMAGE_PHOTOS) + (
            ("motorcycle_right.png", SKIP, "the other view of a stereo pair"),
            ("*", SKIP, "test images: grayscale, medical, astronomy, synthetic"),
        )),
    "lomiri-wallpapers-16.04": Curation("20.04.0-2", "usr/share/backgrounds", (
        ("umang_by_*", SKIP, "rendered gradient art"),
        ("analogpattern_by_*", SKIP, "abstract colour texture"),
        ("*.jpg", KEEP, "photographs"),
    )),
    "lomiri-wallpapers-20.04": Curation("20.04.0-2", "usr/share/backgrounds", (
        ("Kleiber_by_*", KEEP, "photograph"),
        ("*", SKIP, "rendered art and a photo composite"),
    )),
    "kphotoalbum": Curation("5.9.1-1", "usr/share/kphotoalbum/demo", (
        ("CategoryImages/*", SKIP, "thumbnails of the photos below"),
        ("*.jpg", KEEP, "snapshots: people, pets, bars, beaches, canyons"),
    ), train_only=True),
    "scratch": Curation("1.4.0.6~dfsg1-6.1", "usr/share/scratch/Media/Backgrounds", (
        tuple((name, SKIP, "drawn, or a photo whose subject is a painting")
              for name in SCRATCH_NOT_PHOTOS) + (
            ("*.jpg", KEEP, "photographs: rooms, streets, buildings, fields, nature"),
            ("*", SKIP, "GIF drawings"),
        )), train_only=True),
}

# The default photos: those every shipped model was trained on.
DEFAULT_PACKAGES = [name for name, rules in PHOTO_PACKAGES.items() if not rules.train_only]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PAIR_ID_BASE = 900000     # pair crops are numbered from here in each split
SCALE_MAX = 0.6           # largest crop side, as a fraction of the short side
# Fixed val views: (side as a fraction of the short side, x and y position as
# fractions of the free room). View k of every val photo or pair is VAL_VIEWS[k].
VAL_VIEWS = ((0.6, .5, .5), (0.3, .5, .5), (0.3, .15, .2), (0.3, .85, .8),
             (0.3, .85, .2), (0.3, .15, .8), (0.45, .3, .5), (0.45, .7, .5))
PNG_OUT = ["-strip", "-define", "png:exclude-chunk=date,time"]
# Parallelism comes from running many converts; threads inside each only
# oversubscribe the cores.
CHILD_ENV = {**os.environ, "MAGICK_THREAD_LIMIT": "1"}


class DatasetError(Exception):
    """Bad input or a failed step; the message says which file or option."""


@dataclass
class Image:
    """A photo or one side of a pair: where it is and its working copy."""
    key: str
    path: Path
    digest: str = ""
    work: Path | None = None
    size: tuple = (0, 0)
    train_only: bool = False


@dataclass
class Pair:
    """One user-supplied pair; `key` (CONCEPT/NAME) names it in crops.json."""
    name: str
    key: str
    src: Image
    dst: Image


@dataclass
class PairSet:
    """User-supplied (src, dst) pairs for one concept and their split."""
    concept: str
    folder: Path
    pairs: list = field(default_factory=list)
    split: dict = field(default_factory=dict)   # {"train": [names], "val": [names]}


# ---------------------------------------------------------------- utilities

def run_magick(args, what):
    """Run an ImageMagick command; raise DatasetError naming `what` on failure."""
    result = subprocess.run(args, env=CHILD_ENV, capture_output=True, text=True)
    if result.returncode != 0:
        detail = result.stderr.strip() or f"exit status {result.returncode}"
        raise DatasetError(f"{what}: {detail}")
    return result.stdout


def image_size(path):
    out = run_magick(["identify", "-format", "%w %h", f"{path}[0]"],
                     f"cannot read image {path}")
    width, height = out.split()
    return int(width), int(height)


def png_header(path):
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise DatasetError(f"{path} is not a PNG file")
    return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"),
            head[24], head[25])


def file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_atomic(path, text):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tmp_for(path):
    """Temporary name next to `path`, renamed over it once complete."""
    return path.with_name("." + path.stem + ".tmp")


class Progress:
    """A done/total, rate and ETA line on stderr (rewritten in place on a tty)."""

    def __init__(self, label, total):
        self.label, self.total, self.done = label, total, 0
        self.start = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def advance(self, n):
        self.done += n
        now = time.monotonic()
        if self.done < self.total and now - self.shown >= (0.5 if self.tty else 15):
            self.shown = now
            self.show(now, "\r" if self.tty else "\n")

    def finish(self):
        self.show(time.monotonic(), "\n")

    def show(self, now, end):
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        line = (f"{self.label}: {self.done}/{self.total} "
                f"({100 * self.done / max(self.total, 1):.1f}%) {rate:.1f}/s "
                f"elapsed {elapsed:.0f}s ETA {eta:.0f}s")
        sys.stderr.write(("\r" if self.tty else "") + line + end)
        sys.stderr.flush()


def run_parallel(label, tasks, jobs):
    """Run (weight, callable) tasks on `jobs` threads; stop at the first failure."""
    if not tasks:
        return
    progress = Progress(label, sum(weight for weight, _ in tasks))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(fn): weight for weight, fn in tasks}
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
                progress.advance(futures[future])
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    progress.finish()


def log(message):
    print(f"make_dataset: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- concepts

CONCEPT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def check_concept_name(name, what):
    if not CONCEPT_NAME.match(name) or name == "src":
        raise DatasetError(f"{what}: bad concept name {name!r} (use lowercase "
                           "letters, digits, '.', '_', '-'; not 'src')")


def resolve_teachers(spec, teacher_args):
    """{name: recipe} from --concepts SPEC and --teacher NAME=RECIPE options."""
    teachers = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item in CONCEPT_SETS:
            teachers.update(CONCEPT_SETS[item])
        elif item in CONCEPT_SETS["all"]:
            teachers[item] = CONCEPT_SETS["all"][item]
        else:
            known = ", ".join([*CONCEPT_SETS, *CONCEPT_SETS["all"]])
            raise DatasetError(f"--concepts: unknown concept {item!r} "
                               f"(known: {known}; add others with --teacher)")
    for arg in teacher_args:
        name, sep, recipe = arg.partition("=")
        check_concept_name(name, "--teacher")
        if not sep or not recipe.strip():
            raise DatasetError(f"--teacher {arg!r}: expected NAME='RECIPE'")
        try:
            shlex.split(recipe)
        except ValueError as err:
            raise DatasetError(f"--teacher {name}: cannot split recipe: {err}")
        teachers[name] = recipe
    return teachers


# ---------------------------------------------------------------- photos

def fetch_package(package, cache):
    """Download and unpack `package` into the cache once; (version, tree)."""
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        result = subprocess.run(["apt-get", "download", package], cwd=cache,
                                capture_output=True, text=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            raise DatasetError(f"apt-get download {package} failed (run "
                               f"'apt-get update' first?): {result.stderr.strip()}")
    deb = debs[-1]
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    tree = cache / deb.stem
    if not (tree / ".unpacked").exists():
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True)
        (tree / ".unpacked").touch()
    return version, tree


def image_files(folder):
    """Image files below `folder` (symlinks are aliases and are left out)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.is_symlink())


def curate(package, curation, root):
    """Photos kept by the package's rules; one size per `one_per` picture."""
    kept = []
    for path in image_files(root):
        rel = path.relative_to(root).as_posix()
        rule = next((r for r in curation.rules if fnmatch.fnmatch(rel, r[0])), None)
        if rule is None:
            log(f"{package}: {rel} matches no curation rule; skipped")
        elif rule[1] == KEEP:
            kept.append(Image(f"{package}/{rel}", path, train_only=curation.train_only))
    if not curation.one_per:
        return kept
    pictures = {}
    for image in kept:
        match = re.match(curation.one_per, image.key.split("/", 1)[1])
        pictures.setdefault(match.group(1) if match else image.key, []).append(image)
    return [pick_size(group) for group in pictures.values()]


def pick_size(images):
    """The widest image at most 2560 wide, else the narrowest."""
    sized = sorted(((image_size(i.path)[0], i.key, i) for i in images))
    fitting = [entry for entry in sized if entry[0] <= 2560]
    return (fitting[-1] if fitting else sized[0])[2]


def debian_photos(packages, cache):
    """(photos, [{package, version, photos}]) from the curated packages."""
    cache.mkdir(parents=True, exist_ok=True)
    photos, records = [], []
    for package in packages:
        curation = PHOTO_PACKAGES[package]
        version, tree = fetch_package(package, cache)
        if version != curation.version:
            log(f"{package} {version}: rules were written for {curation.version}; "
                "look at new files and update PHOTO_PACKAGES")
        kept = curate(package, curation, tree / curation.root)
        log(f"{package} {version}: {len(kept)} photos")
        photos += kept
        records.append({"package": package, "version": version, "photos": len(kept)})
    return photos, records


def folder_photos(folders):
    """(photos, [{folder, photos}]) from plain folders of JPEG/PNG files."""
    photos, records, names = [], [], set()
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"--photos {folder}: not a folder")
        if folder.name in names:
            raise DatasetError(f"--photos: two folders named {folder.name!r}")
        names.add(folder.name)
        found = [Image(f"{folder.name}/{p.relative_to(folder).as_posix()}", p)
                 for p in image_files(folder)]
        if not found:
            raise DatasetError(f"--photos {folder}: no JPEG/PNG/WebP images")
        photos += found
        records.append({"folder": str(folder), "photos": len(found)})
    return photos, records


def dedupe(photos):
    """Drop exact duplicates (same bytes), keeping the first key in order."""
    seen, unique = {}, []
    for photo in sorted(photos, key=lambda p: p.key):
        photo.digest = file_digest(photo.path)
        if photo.digest in seen:
            log(f"{photo.key} duplicates {seen[photo.digest]}; skipped")
            continue
        seen[photo.digest] = photo.key
        unique.append(photo)
    return unique


# ---------------------------------------------------------------- pairs

def find_pairs(pair_set):
    """Fill pair_set.pairs from FOLDER/{src,dst}/X.* or FOLDER/X.{src,dst}.*."""
    folder = pair_set.folder
    if (folder / "src").is_dir() and (folder / "dst").is_dir():
        srcs = by_stem(image_files(folder / "src"), lambda p: p.stem)
        dsts = by_stem(image_files(folder / "dst"), lambda p: p.stem)
    elif folder.is_dir():
        files = [p for p in image_files(folder) if p.parent == folder]
        srcs = by_stem([p for p in files if p.stem.endswith(".src")], lambda p: p.stem[:-4])
        dsts = by_stem([p for p in files if p.stem.endswith(".dst")], lambda p: p.stem[:-4])
    else:
        raise DatasetError(f"--pairs {folder}: not a folder")
    for name in sorted(set(srcs) ^ set(dsts)):
        lone = srcs.get(name) or dsts.get(name)
        raise DatasetError(f"--pairs: {lone} has no partner ({name} needs both src and dst)")
    if not srcs:
        raise DatasetError(f"--pairs {folder}: no pairs (expected src/X.png + dst/X.png "
                           "or X.src.png + X.dst.png)")
    for name in sorted(srcs):
        src, dst = srcs[name], dsts[name]
        src_size, dst_size = image_size(src), image_size(dst)
        if src_size != dst_size:
            raise DatasetError(f"--pairs: {dst} is {dst_size[0]}x{dst_size[1]} but its "
                               f"source {src} is {src_size[0]}x{src_size[1]}")
        key = f"{pair_set.concept}/{name}"
        pair_set.pairs.append(Pair(name, key, Image(key + ".src", src, file_digest(src)),
                                   Image(key + ".dst", dst, file_digest(dst))))


def by_stem(paths, stem):
    found = {}
    for path in paths:
        name = stem(path)
        if name in found:
            raise DatasetError(f"--pairs: {found[name]} and {path} have the same name")
        found[name] = path
    return found


# ---------------------------------------------------------------- planning

def make_work_copy(image, cache, side):
    """An 8-bit sRGB PNG of `image`, short side at most `side`, cached by content."""
    image.work = cache / "work" / f"{image.digest[:24]}-{side}.png"
    if not image.work.exists():
        image.work.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_for(image.work)
        run_magick(["convert", f"{image.path}[0]", "-auto-orient", "-colorspace", "sRGB",
                    "-background", "white", "-alpha", "remove", "-alpha", "off",
                    "-filter", "Lanczos", "-resize", f"{side}x{side}^>", *PNG_OUT,
                    f"PNG24:{tmp}"], f"cannot prepare {image.path}")
        os.replace(tmp, image.work)
    image.size = image_size(image.work)


def split_items(items, val_fraction, rng):
    """Seeded split into (train, val): val_fraction of them, at least min(4, n-1)."""
    items = list(items)
    rng.shuffle(items)
    n_val = max(round(val_fraction * len(items)), min(4, len(items) - 1))
    return items[n_val:], items[:n_val]


def split_photos(photos, val_fraction, seed):
    """(train, val) photos: a seeded split of all but the train-only ones,
    which are added to train, so adding such photos leaves val unchanged."""
    train, val = split_items(sorted((p for p in photos if not p.train_only), key=lambda p: p.key),
                             val_fraction, random.Random(f"{seed}/photo-split"))
    return train + [p for p in photos if p.train_only], val


def random_box(rng, size, crop):
    """A random square (side, x, y) and flip: side in [crop, SCALE_MAX * short side]."""
    width, height = size
    low = min(crop, width, height)
    side = rng.randint(low, max(low, int(SCALE_MAX * min(width, height))))
    return (side, rng.randint(0, width - side), rng.randint(0, height - side)), rng.random() < 0.5


def view_box(view, size, crop):
    """The fixed val square (side, x, y) of VAL_VIEWS entry `view`."""
    scale, fx, fy = view
    width, height = size
    side = max(min(crop, width, height), round(scale * min(width, height)))
    return side, round(fx * (width - side)), round(fy * (height - side))


def plan_photo_crops(train, val, args):
    """[{id, split, source, box, flip}] for photo crops; IDs count from 0 per split."""
    rng = random.Random(f"{args.seed}/train-crops")
    crops = []
    if train:
        chosen = rng.choices(train, weights=[p.size[0] * p.size[1] for p in train],
                             k=args.train_crops)
        for index, photo in enumerate(chosen):
            box, flip = random_box(rng, photo.size, args.crop)
            crops.append(crop_entry("train", index, photo.key, box, flip))
    views = [(p, v) for p in val for v in VAL_VIEWS[:args.val_crops_per_photo]]
    for index, (photo, view) in enumerate(views):
        box = view_box(view, photo.size, args.crop)
        crops.append(crop_entry("val", index, photo.key, box, False))
    return crops


def plan_pair_crops(pair_set, args, first_ids):
    """Split one pair set and plan its crops, IDs continuing from first_ids[split]."""
    rng = random.Random(f"{args.seed}/pairs/{pair_set.concept}")
    train, val = split_items(pair_set.pairs, args.val_fraction, rng)
    pair_set.split = {"train": sorted(p.name for p in train), "val": sorted(p.name for p in val)}
    crops = []
    for split, pairs in (("train", train), ("val", val)):
        for pair in pairs:
            if split == "train":
                boxes = [random_box(rng, pair.src.size, args.crop)
                         for _ in range(args.crops_per_pair)]
            else:
                boxes = [(view_box(v, pair.src.size, args.crop), False)
                         for v in VAL_VIEWS[:args.val_crops_per_photo]]
            for box, flip in boxes:
                crops.append(crop_entry(split, first_ids[split], pair.key, box, flip,
                                        pair=pair_set.concept))
                first_ids[split] += 1
    return crops


def crop_entry(split, index, source, box, flip, pair=None):
    entry = {"id": f"{index:06d}", "split": split, "source": source,
             "box": list(box), "flip": flip}
    if pair:
        entry["pair"] = pair
    return entry


def check_plan(out, plan, force):
    """Refuse to mix crops of two different plans in one folder (unless --force)."""
    path = out / "crops.json"
    if path.exists() and json.loads(path.read_text()) != plan:
        if not force:
            raise DatasetError(f"{out} holds a dataset made with other photos, crops or "
                               "seed; use --force to rebuild it or choose another --out")
        log(f"--force: removing the old dataset in {out}")
        for name in ("train", "val", "crops.json", "manifest.json", "README.md"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(plan, indent=1) + "\n")


# ---------------------------------------------------------------- building

def crop_tasks(crops, works, out, crop):
    """One convert per source image, writing all of its missing crops."""
    by_work = {}
    for entry in crops:
        for work, concept in works(entry):
            target = out / entry["split"] / concept / f"{entry['id']}.png"
            if not target.exists():
                by_work.setdefault(work, []).append((entry, target))
    return [(len(items), lambda w=work, i=items: write_crops(w, i, crop))
            for work, items in by_work.items()]


def write_crops(work, items, crop):
    """Cut, resize (Lanczos) and maybe flop each (entry, target) from `work`."""
    cmd = ["convert", str(work), "-quiet", "-filter", "Lanczos", *PNG_OUT]
    for entry, target in items:
        side, x, y = entry["box"]
        target.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["(", "+clone", "-crop", f"{side}x{side}+{x}+{y}", "+repage",
                "-resize", f"{crop}x{crop}!", *(["-flop"] if entry["flip"] else []),
                "-write", f"PNG24:{tmp_for(target)}", "+delete", ")"]
    run_magick(cmd + ["null:"], f"cannot cut crops from {work}")
    for _, target in items:
        os.replace(tmp_for(target), target)


def teacher_tasks(teachers, crops, out, crop):
    """One convert per (teacher, photo crop) whose output is missing."""
    tasks = []
    for name, recipe in teachers.items():
        recipe_args = shlex.split(recipe)
        for entry in crops:
            if "pair" in entry:
                continue
            src = out / entry["split"] / "src" / f"{entry['id']}.png"
            dst = out / entry["split"] / name / f"{entry['id']}.png"
            if not dst.exists():
                tasks.append((1, lambda s=src, d=dst, n=name, r=recipe_args:
                              apply_teacher(n, r, s, d, crop)))
    return tasks


def apply_teacher(name, recipe_args, src, dst, crop):
    """convert SRC RECIPE DST, written atomically as 8-bit RGB PNG of the crop's size."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_for(dst)
    run_magick(["convert", str(src), *recipe_args, *PNG_OUT, f"PNG24:{tmp}"],
               f"teacher {name} failed on {src}")
    if not tmp.exists():
        raise DatasetError(f"teacher {name} left several images on {src}; "
                           "its recipe must end with exactly one")
    width, height, _, _ = png_header(tmp)
    if (width, height) != (crop, crop):
        tmp.unlink()
        raise DatasetError(f"teacher {name} made a {width}x{height} image from the "
                           f"{crop}x{crop} crop {src}; teachers must keep the size")
    os.replace(tmp, dst)


def drop_changed_concepts(out, recipes):
    """Remove outputs of concepts whose recipe (None for pairs) changed since the last build."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        return
    old = {c["name"]: c["recipe"] for c in json.loads(manifest.read_text())["concepts"]}
    for name, recipe in recipes.items():
        if name in old and old[name] != recipe:
            log(f"recipe of {name} changed; rebuilding it")
            for split in ("train", "val"):
                shutil.rmtree(out / split / name, ignore_errors=True)
    manifest.unlink()


# ---------------------------------------------------------------- manifest

def write_manifest(out, args, teachers, pair_sets, packages, folders, photo_split, crops):
    concepts = [{"name": n, "recipe": r, "source": "teacher"} for n, r in teachers.items()]
    concepts += [{"name": s.concept, "recipe": None, "source": "pairs",
                  "pairs_folder": str(s.folder)} for s in pair_sets]
    splits = {}
    for split in ("train", "val"):
        ids = [e["id"] for e in crops if e["split"] == split]
        counts = {c["name"]: sum((out / split / c["name"] / f"{i}.png").exists() for i in ids)
                  for c in concepts}
        splits[split] = {"ids": ids, "concepts": counts}
    manifest = {
        "format": "e2gan-dataset", "version": 1, "crop": args.crop, "seed": args.seed,
        "photo_side": args.photo_side, "command": command_line(),
        "concepts": concepts, "packages": packages, "folders": folders,
        "photos": {split: [p.key for p in photos] for split, photos in photo_split.items()},
        "pairs": {s.concept: s.split for s in pair_sets},
        "splits": splits,
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def write_readme(out, manifest):
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    sources = ", ".join(f"{p['package']} {p['version']}" for p in manifest["packages"])
    sources = ", ".join(filter(None, [sources] + [f["folder"] for f in manifest["folders"]]))
    text = (f"# E²GAN dataset\n\nMade by tools/make_dataset.py on "
            f"{time.strftime('%Y-%m-%d')} with `{manifest['command']}`: "
            f"{len(manifest['photos']['train'])} train and {len(manifest['photos']['val'])} "
            f"val photos (from {sources or 'no photos'}, split by photo, seed "
            f"{manifest['seed']}), cut into {len(train['ids'])} train and {len(val['ids'])} "
            f"val {manifest['crop']}×{manifest['crop']} source crops (SPLIT/src/ID.png), and "
            f"for each concept ({', '.join(c['name'] for c in manifest['concepts'])}) its "
            "edit of each crop (SPLIT/CONCEPT/ID.png): teachers are one ImageMagick "
            "command each (recipes and counts in manifest.json), and pair sets are cut "
            "identically on both sides. crops.json records every crop's source and box. "
            "See docs/data.md in the e2gan repository.\n")
    write_atomic(out / "README.md", text)


def command_line():
    return " ".join(shlex.quote(a) for a in ["tools/make_dataset.py", *sys.argv[1:]])


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Build the E²GAN paired dataset (see docs/data.md).")
    p.add_argument("--out", type=Path, default=REPO / "build" / "dataset",
                   help="output folder (default: build/dataset)")
    p.add_argument("--photos-from", choices=("debian", "none"),
                   help="photo packages: debian (the default unless --photos is "
                        "given) or none")
    p.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                   help="comma list of curated packages to use (default: all but the "
                   f"train-only ones, {', '.join(sorted(set(PHOTO_PACKAGES) - set(DEFAULT_PACKAGES)))}: "
                   "%(default)s)")
    p.add_argument("--photos", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of JPEG/PNG photos (repeatable)")
    p.add_argument("--cache", type=Path, default=REPO / "build" / "photo-cache",
                   help="downloads and working copies (default: build/photo-cache)")
    p.add_argument("--photo-side", type=int, default=1024,
                   help="photos are first shrunk to this short side (default 1024)")
    p.add_argument("--crop", type=int, default=128, help="crop size (default 128)")
    p.add_argument("--train-crops", type=int, default=4000,
                   help="random train crops over all train photos (default 4000)")
    p.add_argument("--val-crops-per-photo", type=int, default=4,
                   help=f"fixed crops per val photo or pair (default 4, at most {len(VAL_VIEWS)})")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of photos (and of pairs) for val "
                        "(default 0.15; at least min(4, n-1))")
    p.add_argument("--seed", type=int, default=1, help="seed of splits and crops (default 1)")
    p.add_argument("--concepts", default="all",
                   help="built-in teachers: all, base, new, none or a comma list of names")
    p.add_argument("--teacher", action="append", default=[], metavar="NAME=RECIPE",
                   help="another teacher: convert src.png RECIPE dst.png (repeatable)")
    p.add_argument("--pairs", type=Path, action="append", default=[], metavar="DIR",
                   help="ready-made pairs: DIR/src/X.* + DIR/dst/X.*, or DIR/X.src.* + "
                        "DIR/X.dst.* (repeatable; each needs a --concept)")
    p.add_argument("--concept", action="append", default=[], metavar="NAME",
                   help="concept name of the matching --pairs")
    p.add_argument("--crops-per-pair", type=int, default=8,
                   help="random train crops per train pair (default 8)")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                   help="parallel convert processes (default: number of CPUs)")
    p.add_argument("--force", action="store_true",
                   help="rebuild OUT when it holds a dataset with other crops")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    if args.photos_from is None:
        args.photos_from = "none" if args.photos else "debian"
    args.packages = [s for s in (x.strip() for x in args.packages.split(",")) if s]
    unknown = [s for s in args.packages if s not in PHOTO_PACKAGES]
    if unknown:
        raise DatasetError(f"--packages: no curation rules for {', '.join(unknown)} "
                           f"(known: {', '.join(PHOTO_PACKAGES)})")
    if len(args.pairs) != len(args.concept):
        raise DatasetError("each --pairs DIR needs its own --concept NAME")
    for name in args.concept:
        check_concept_name(name, "--concept")
    limits = (
        (1 <= args.val_crops_per_photo <= len(VAL_VIEWS),
         f"--val-crops-per-photo must be 1..{len(VAL_VIEWS)}"),
        (0 <= args.train_crops <= PAIR_ID_BASE, f"--train-crops must be 0..{PAIR_ID_BASE}"),
        (args.crops_per_pair >= 1, "--crops-per-pair must be at least 1"),
        (0 <= args.val_fraction < 1, "--val-fraction must be in [0, 1)"),
        (args.crop >= 8 and args.crop % 8 == 0,
         "--crop must be a multiple of 8 (the generator's stride)"),
        (args.photo_side >= args.crop, "--photo-side must be at least --crop"),
        (args.jobs >= 1, "--jobs must be at least 1"),
    )
    for ok, message in limits:
        if not ok:
            raise DatasetError(message)


def gather_photos(args):
    photos, packages, folders = [], [], []
    if args.photos_from == "debian":
        photos, packages = debian_photos(args.packages, args.cache)
    found, folders = folder_photos(args.photos)
    return dedupe(photos + found), packages, folders


def build(args):
    started = time.monotonic()
    teachers = resolve_teachers(args.concepts, args.teacher)
    pair_sets = [PairSet(c, d) for d, c in zip(args.pairs, args.concept)]
    clash = set(teachers) & set(args.concept) or len(set(args.concept)) < len(args.concept)
    if clash:
        raise DatasetError("a concept name is used twice (teachers and --concept "
                           "names must all differ)")
    for pair_set in pair_sets:
        find_pairs(pair_set)
    photos, packages, folders = gather_photos(args)
    images = photos + [i for s in pair_sets for p in s.pairs for i in (p.src, p.dst)]
    run_parallel("working copies", [(1, lambda i=i: make_work_copy(i, args.cache, args.photo_side))
                                    for i in images], args.jobs)
    train, val = split_photos(photos, args.val_fraction, args.seed)
    log(f"{len(photos)} photos: {len(train)} train, {len(val)} val")
    crops = plan_photo_crops(train, val, args)
    first_ids = {"train": PAIR_ID_BASE, "val": PAIR_ID_BASE}
    for pair_set in pair_sets:
        crops += plan_pair_crops(pair_set, args, first_ids)
    if not crops:
        raise DatasetError("nothing to build: no photos and no pairs")
    check_plan(args.out, {"crop": args.crop, "photo_side": args.photo_side, "crops": crops},
               args.force)
    drop_changed_concepts(args.out, {**teachers, **dict.fromkeys(args.concept)})

    works = work_lookup(photos, pair_sets)
    run_parallel("crops", crop_tasks(crops, works, args.out, args.crop), args.jobs)
    run_parallel("teachers", teacher_tasks(teachers, crops, args.out, args.crop), args.jobs)
    photo_split = {"train": sorted(train, key=lambda p: p.key),
                   "val": sorted(val, key=lambda p: p.key)}
    manifest = write_manifest(args.out, args, teachers, pair_sets, packages, folders,
                              photo_split, crops)
    write_readme(args.out, manifest)
    log(f"done in {time.monotonic() - started:.0f}s: {args.out} "
        f"({len(manifest['splits']['train']['ids'])} train, "
        f"{len(manifest['splits']['val']['ids'])} val crops, {len(manifest['concepts'])} concepts)")


def work_lookup(photos, pair_sets):
    """entry -> [(working copy, output concept folder)] for every crop entry."""
    by_key = {p.key: p.work for p in photos}
    for pair_set in pair_sets:
        for pair in pair_set.pairs:
            by_key[pair.key] = (pair.src.work, pair.dst.work)

    def works(entry):
        if "pair" in entry:
            src, dst = by_key[entry["source"]]
            return [(src, "src"), (dst, entry["pair"])]
        return [(by_key[entry["source"]], "src")]
    return works


def main(argv=None):
    try:
        build(parse_args(argv))
    except DatasetError as err:
        print(f"make_dataset: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make_dataset: interrupted; run again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
