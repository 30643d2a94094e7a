// zlib, for the gzip-compressed IDX files of image datasets.
#include <zlib.h>
