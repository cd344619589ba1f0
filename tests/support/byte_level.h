// How a byte-level BPE vocabulary (GPT-2's map) spells each byte: shared by
// the tests that build such vocabularies and the BPE fuzz target.
#pragma once

#include <string>

namespace starkv_test {

// GPT-2's byte-to-unicode map, as a real byte-level BPE vocabulary spells bytes.
inline std::string hf_byte_token(int b) {
    auto direct = [](int x) { return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF); };
    int cp = b;
    if (!direct(b)) {
        int n = 0;
        for (int x = 0; x < b; ++x) n += !direct(x);
        cp = 256 + n;
    }
    std::string s;
    if (cp < 0x80) {
        s += static_cast<char>(cp);
    } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
}

}  // namespace starkv_test
