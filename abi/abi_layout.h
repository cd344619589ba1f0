/* One entry of abi/layout.h, as seen by one header. */
#ifndef STARKV_ABI_LAYOUT_H
#define STARKV_ABI_LAYOUT_H
#include <stddef.h>
typedef struct abi_entry {
    const char *name;   /* "struct", "struct.field" or "CONSTANT" */
    size_t offset;      /* field offset; 0 otherwise */
    size_t size;        /* sizeof the struct or field; 0 for constants */
    long long value;    /* constant value */
} abi_entry;
/* The current header's table (abi_layout_current.c). */
extern const abi_entry abi_current_entries[];
extern const size_t abi_current_n_entries;
#endif
