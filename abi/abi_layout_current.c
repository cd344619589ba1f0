/* abi/layout.h expanded against the CURRENT public header: if a released field
 * or constant is removed or renamed, this file stops compiling. */
#include <starkv/starkv.h>

#include "abi_layout.h"

#define S(s) {#s, 0, sizeof(s), 0},
#define F(s, f) {#s "." #f, offsetof(s, f), sizeof(((s *)0)->f), 0},
#define E(c) {#c, 0, 0, (long long)(c)},
const abi_entry abi_current_entries[] = {
#include "layout.h"
};
#undef S
#undef F
#undef E
const size_t abi_current_n_entries = sizeof(abi_current_entries) / sizeof(abi_current_entries[0]);
