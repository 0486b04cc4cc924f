/* Says what a file that is not the expected format seems to be (internal). */
#ifndef KW_MODEL_SNIFF_H
#define KW_MODEL_SNIFF_H

#include <stddef.h>

/* Writes e.g. "starts with '<!DOCTYPE html>' — an HTML page saved instead of the file?",
 * "the file is empty", "starts with bytes 00 01 02 03". */
void kw__sniff(const void *buf, size_t n, char *out, size_t cap);

#endif
