/* dataset.h — paired training data as tools/make_dataset.py writes it
 * (docs/data.md): OUT/manifest.json, OUT/SPLIT/src/ID.png and
 * OUT/SPLIT/CONCEPT/ID.png.  A split is loaded whole into memory as 8-bit
 * pairs; batches are drawn deterministically from (seed, step). */
#ifndef E2G_DATASET_H
#define E2G_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int concept;          /* index into the dataset's concept list */
    const uint8_t *src;   /* crop × crop × 3 */
    const uint8_t *dst;
} e2g_pair;

typedef struct {
    int crop;
    int n_concepts;
    char **concepts; /* the concepts loaded, in the order asked for */
    int n_pairs;
    e2g_pair *pairs;
    uint8_t *pixels; /* every image of the split */
} e2g_dataset;

/* Loads the pairs of `split` ("train" or "val") for the given concepts (a
 * comma list, or NULL for every concept of the manifest).  Unknown
 * concepts, missing files and images of the wrong size are errors. */
int e2g_dataset_load(e2g_dataset **out, const char *dir, const char *split, const char *concepts,
                     char *err);
void e2g_dataset_free(e2g_dataset *d);

/* A dataset made in memory from a folder of user pairs — the form in which
 * a fine-tuning job's uploads (or diffusion-made pairs) arrive: files
 * STEM.src.EXT and STEM.dst.EXT (EXT png, jpg, jpeg or webp), or src/STEM.EXT and
 * dst/STEM.EXT.  The pairs are split by a seeded shuffle (val_fraction of
 * them, at least one, for validation); training crops are random squares
 * (side from the crop size up to the short side: scale jitter), resampled
 * to crop × crop with antialiasing and flipped at random, drawn round-robin
 * over the training pairs; validation has two fixed centred views per pair
 * (the whole short side and half of it).  Both images of a pair must have
 * the same size.  Deterministic for a seed. */
typedef struct {
    int crop;              /* side of the crops, a multiple of 8 */
    int train_crops;       /* training crops in all */
    double val_fraction;   /* share of the pairs kept for validation */
    unsigned long long seed;
    long max_pixels;       /* per image, checked before decoding */
} e2g_pairs_opts;

void e2g_pairs_defaults(e2g_pairs_opts *o);
/* The number of complete pairs in dir (names only, nothing decoded), or
 * -1 with a message: an image without its partner, fewer than 2 pairs. */
int e2g_pairs_count(const char *dir, char *err);
int e2g_dataset_from_pairs(e2g_dataset **train, e2g_dataset **val, const char *dir,
                           const char *concept, const e2g_pairs_opts *o, char *err);

/* Draws some concepts more often: `weights` is a comma list NAME=K (K an
 * integer 1..100), and each pair of NAME then appears K times in the
 * pairs that batches are drawn from.  Unknown names and bad K are errors;
 * on error nothing changes. */
int e2g_dataset_weigh(e2g_dataset *d, const char *weights, char *err);

/* Keeps only the pairs whose index has keep[i] set (data reduction). */
void e2g_dataset_select(e2g_dataset *d, const unsigned char *keep);

/* The pair indices of batch `step`: an epoch-wise shuffle of all pairs
 * seeded by (seed, epoch), so any step's batch is known without replaying
 * the ones before it (resume gives the same batches). */
void e2g_dataset_batch(const e2g_dataset *d, unsigned long long seed, long step, int batch,
                       int *indices);

/* Converts pairs to the model's NHWC floats in [-1, 1]. */
void e2g_pairs_to_tensors(const e2g_dataset *d, const int *indices, int n, float *src, float *dst);

#endif
