#!/usr/bin/env bash
# unseen_eval.sh — the shipped models on photos as a new user sends them:
#
#   test-128    25 photographs no training run has seen (the sample photos of
#               Debian's opencv-doc: street scenes, fruit, a baboon, a
#               squirrel, signs, a circuit board…), eight fixed 128² views
#               each: the validation protocol on new photos
#   test-whole  the same 25 photos whole: each one's largest centre square at
#               320² (the smallest short side among them is 333)
#   val-1024    the dataset's own validation photos (never trained on) whole,
#               at 1024²: eight times the side the models were trained at
#
# The teachers are the dataset's (tools/make_dataset.py: every photo goes to
# val).  Each set is one `e2gan evaluate` of the base concepts and one per
# adapter in models/adapters/; the tables (tools/quality_table.py) go to
# stdout, the evaluations and full-size contact sheets to OUT/<set>/<name>/,
# and a copy of each evaluation to SHIP/<set>-<name>.json, with its contact
# sheet shrunk to 386 pixels wide (.jpg) for the test sets (val-1024's
# sheets are over ImageMagick's 16K-pixel height limit: see them in OUT).
# models/README.md quotes it.
#
# usage: tools/unseen_eval.sh        (after tools/setup.sh)
# env:   OUT (build/unseen/reports), SHIP (models/reports/unseen),
#        SETS ("test-128 test-whole val-1024"), PRECISION (fp32), THREADS (2),
#        MODEL (models/e2gan-s.safetensors), ADAPTERS (models/adapters: every
#        *.safetensors in it; an empty folder evaluates the base alone) — a
#        candidate is measured before it is shipped with MODEL, ADAPTERS and SHIP
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-build/unseen/reports}
SHIP=${SHIP:-models/reports/unseen}
SETS=${SETS:-"test-128 test-whole val-1024"}
PRECISION=${PRECISION:-fp32}
THREADS=${THREADS:-2}
MODEL=${MODEL:-models/e2gan-s.safetensors}
ADAPTERS=${ADAPTERS:-models/adapters}
WORK=build/unseen
BASE_CONCEPTS=oil-paint,charcoal,sepia,pop-art,winter,night,vivid,thermal
# The photographs among opencv-doc's sample images (version 4.6.0+dfsg-12),
# chosen by looking at each; of a stereo or sequence pair only the first.
# Left out: drawings, renders, screenshots, text pages, grayscale images,
# motion-blurred and light-box shots, and starry_night (a painting).
EXAMPLES=usr/share/doc/opencv-doc/examples
PHOTOS="data/aero1.jpg data/aloeL.jpg data/apple.jpg data/baboon.jpg data/board.jpg
  data/building.jpg data/butterfly.jpg data/ela_original.jpg data/fruits.jpg data/graf1.png
  data/home.jpg data/left.jpg data/leuvenA.jpg data/messi5.jpg data/orange.jpg
  data/rubberwhale1.png data/squirrel_cls.jpg data/stuff.jpg alphamat/input_images/plant.jpg
  text/scenetext01.jpg text/scenetext02.jpg text/scenetext03.jpg text/scenetext04.jpg
  text/scenetext05.jpg text/scenetext06.jpg"

mkdir -p "$WORK/deb" "$WORK/photos" "$OUT" "$SHIP"
if [ ! -d "$WORK/root/$EXAMPLES" ]; then
  (cd "$WORK/deb" && apt-get download opencv-doc)
  dpkg -x "$WORK"/deb/opencv-doc_*.deb "$WORK/root"
fi
for photo in $PHOTOS; do
  cp "$WORK/root/$EXAMPLES/$photo" "$WORK/photos/"
done

dataset() { # SET: builds the set's dataset into $data (test sets: every photo in val)
  local photos=(--photos "$WORK/photos" --val-fraction 0.99)
  shrunk_sheets=1
  case $1 in
    test-128)   set -- --crop 128 --val-crops-per-photo 8 ;;
    test-whole) set -- --crop 320 --photo-side 320 --val-crops-per-photo 1 ;;
    val-1024)   photos=(); shrunk_sheets=0; set -- --crop 1024 --photo-side 1024 --val-crops-per-photo 1 ;;
    *) echo "unseen_eval.sh: unknown set $1" >&2; exit 2 ;;
  esac
  /usr/bin/python3 tools/make_dataset.py "${photos[@]}" "$@" --train-crops 0 \
    --out "$data" --cache build/photo-cache >/dev/null
}

evaluate() { # SET NAME ARGS…: one `e2gan evaluate` (its log is shown if it fails), then its copies
  local report=$OUT/$1/$2 copy=$SHIP/$1-$2
  shift 2
  mkdir -p "$report"
  build/e2gan evaluate "$@" --report "$report" >/dev/null 2>"$report.log" || { cat "$report.log" >&2; exit 1; }
  cp "$report/evaluation.json" "$copy.json"
  if [ "$shrunk_sheets" = 1 ]; then convert "$report/contact.png" -resize 386x -quality 85 "$copy.jpg"; fi
}

for set in $SETS; do
  data=$WORK/data-$set
  dataset "$set"
  common=(--model "$MODEL" --data "$data" --precision "$PRECISION" --threads "$THREADS")
  evaluate "$set" base "${common[@]}" --concepts "$BASE_CONCEPTS"
  reports=("$SHIP/$set-base.json")
  for adapter in "$ADAPTERS"/*.safetensors; do
    [ -f "$adapter" ] || continue
    concept=$(basename "$adapter" .safetensors)
    evaluate "$set" "$concept" "${common[@]}" --adapter "$adapter" --concept "$concept"
    reports+=("$SHIP/$set-$concept.json")
  done
  echo "## $set: $(find "$data/val/src" -name '*.png' | wc -l) pairs per concept, $PRECISION"
  /usr/bin/python3 tools/quality_table.py "${reports[@]}"
  echo
done
