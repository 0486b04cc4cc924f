/* A model file mapped read-only, for the format readers (internal). */
#ifndef KW_MODEL_MAPFILE_H
#define KW_MODEL_MAPFILE_H

#include <stddef.h>

#include "kvweave/status.h"

/* Maps the whole of the regular file `path` read-only, its pages populated. *map is
 * NULL for an empty file (there is nothing to map), *size the file's size. Errors name
 * the path: KW_ENOTFOUND, KW_EINVAL (not a regular file), KW_EIO. */
int kw__mapfile_open(const char *path, void **map, size_t *size, kw_error *err);
/* Unmaps what kw__mapfile_open mapped; a NULL map is nothing to do. */
void kw__mapfile_close(void *map, size_t size);

#endif
