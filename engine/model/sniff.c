/* Describes the start of a file in an error message. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sniff.h"

void kw__sniff(const void *buf, size_t n, char *out, size_t cap)
{
    const unsigned char *p = buf;
    if (n == 0) {
        snprintf(out, cap, "the file is empty");
        return;
    }
    size_t s = 0;
    while (s < n && s < 64 && isspace(p[s]))
        s++;
    size_t len = 0;
    while (s + len < n && len < 15 && p[s + len] >= 0x20 && p[s + len] < 0x7f)
        len++;
    const char *hint = "";
    if (len >= 1 && p[s] == '<' && (n - s >= 5 && (!strncasecmp((const char *)p + s, "<!doc", 5) ||
                                                   !strncasecmp((const char *)p + s, "<html", 5))))
        hint = " \u2014 an HTML page saved instead of the file?";
    else if (n - s >= 7 && !memcmp(p + s, "version", 7) && memmem(p, n < 200 ? n : 200, "git-lfs", 7))
        hint = " \u2014 a Git LFS pointer instead of the file?";
    else if (len >= 1 && (p[s] == '{' || p[s] == '['))
        hint = " \u2014 a JSON file?";
    if (len >= 4) {
        snprintf(out, cap, "starts with '%.*s'%s", (int)len, (const char *)p + s, hint);
        return;
    }
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(hex + strlen(hex), sizeof hex - strlen(hex), i ? " %02x" : "%02x", p[i]);
    snprintf(out, cap, "starts with bytes %s", hex);
}
