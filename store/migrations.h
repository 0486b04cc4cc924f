/* The results-store migrations embedded at build time (store/embed_sql.py generates
 * migrations.c from schemas/sql/NNNN_name.sql). Internal to store/. */
#ifndef KW_STORE_MIGRATIONS_H
#define KW_STORE_MIGRATIONS_H

typedef struct kw__migration {
    int version;     /* NNNN of the file name: 1, 2, ... without gaps */
    const char *name;
    const char *sql; /* the whole file, run as one script */
} kw__migration;

extern const kw__migration kw__migrations[];
extern const int kw__migrations_n; /* == the schema version this build knows */

#endif
