/* placeholder: filled in by its owner */
typedef int kw__placeholder_pipeline;
