// safetensors reader: round trips of files written here, and corrupt files
// that must give a status, never a crash (the suite also runs under ASan).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/dequant.h"
#include "model/safetensors.h"
#include "test_paths.h"

using namespace starkv;
using json = nlohmann::json;

namespace {

struct StTensor {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};

std::string u64le(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

// Header length + header + data, as the safetensors library writes it.
std::string st_serialize_header(const std::string& header, const std::string& data) {
    return u64le(header.size()) + header + data;
}

std::string st_serialize(const std::vector<StTensor>& ts) {
    json h = json::object();
    h["__metadata__"] = {{"format", "pt"}};
    std::string data;
    for (const auto& t : ts) {
        h[t.name] = {{"dtype", t.dtype},
                     {"shape", t.shape},
                     {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    std::string header = h.dump();
    header.append((8 - header.size() % 8) % 8, ' ');  // the reference writer pads to 8
    return st_serialize_header(header, data);
}

std::string write_file(const std::string& name, const std::string& content) {
    const std::string dir = starkv_test::temp_dir() + "/safetensors";
    std::filesystem::create_directories(dir);
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

template <typename T>
std::string raw(const std::vector<T>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Opens the file and reads every tensor it can; returns the status thrown
// (STARKV_OK when all went through).
starkv_status try_read(const std::string& path) {
    try {
        SafetensorsFile f(path);
        for (const auto& t : f.tensors()) {
            std::vector<float> out(t.n_elems);
            f.read_f32(t, out.data());
        }
        return STARKV_OK;
    } catch (const Error& e) {
        return e.status();
    }
}

starkv_status header_status(const std::string& name, const std::string& header,
                            const std::string& data = std::string(64, '\0')) {
    return try_read(write_file(name, st_serialize_header(header, data)));
}

}  // namespace

TEST(Safetensors, RoundTripF32F16Bf16) {
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> a(6 * 4);
    for (auto& x : a) x = nd(rng);
    std::vector<uint16_t> b(5), c(3 * 2 * 2);
    std::vector<float> b_want(5), c_want(12);
    for (size_t i = 0; i < b.size(); ++i) {
        b[i] = fp32_to_fp16(nd(rng));
        b_want[i] = fp16_to_fp32(b[i]);
    }
    for (size_t i = 0; i < c.size(); ++i) {
        const float x = nd(rng);
        uint32_t u;
        std::memcpy(&u, &x, 4);
        c[i] = static_cast<uint16_t>(u >> 16);  // truncate to bf16
        const uint32_t back = static_cast<uint32_t>(c[i]) << 16;
        std::memcpy(&c_want[i], &back, 4);
    }
    const std::string path = write_file(
        "rt.safetensors",
        st_serialize({{"a.weight", "F32", {6, 4}, raw(a)},
                      {"b", "F16", {5}, raw(b)},
                      {"c", "BF16", {3, 2, 2}, raw(c)},
                      {"empty", "F32", {0, 4}, ""},
                      {"ids", "I64", {2}, std::string(16, '\1')}}));
    SafetensorsFile f(path);
    ASSERT_EQ(f.tensors().size(), 5u);
    const SafetensorsTensor* ta = f.find("a.weight");
    ASSERT_NE(ta, nullptr);
    EXPECT_EQ(ta->dtype, "F32");
    EXPECT_EQ(ta->shape, (std::vector<int64_t>{6, 4}));
    EXPECT_EQ(ta->n_elems, 24u);
    EXPECT_EQ(ta->n_bytes, 96u);
    std::vector<float> out(24);
    f.read_f32(*ta, out.data());
    EXPECT_EQ(out, a);

    out.assign(5, 0);
    f.read_f32(*f.find("b"), out.data());
    EXPECT_EQ(out, b_want);
    out.assign(12, 0);
    f.read_f32(*f.find("c"), out.data());
    EXPECT_EQ(out, c_want);
    EXPECT_EQ(f.find("c")->shape, (std::vector<int64_t>{3, 2, 2}));
    EXPECT_EQ(f.find("empty")->n_elems, 0u);
    EXPECT_EQ(f.find("__metadata__"), nullptr);
    EXPECT_EQ(f.find("missing"), nullptr);

    // Known but non-float dtype: opens, but reading it is UNSUPPORTED, naming it.
    try {
        f.read_f32(*f.find("ids"), out.data());
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_UNSUPPORTED);
        EXPECT_NE(std::string(e.what()).find("I64"), std::string::npos) << e.what();
    }

    // The offsets handed out are absolute file offsets.
    const std::string bytes = starkv_test::read_file(path);
    EXPECT_EQ(0, std::memcmp(bytes.data() + ta->offset, a.data(), 96));

    SafetensorsSet set = SafetensorsSet::open_file(path);
    const auto infos = set.tensor_infos();
    EXPECT_EQ(infos.size(), 5u);
    out.assign(24, 0);
    set.read_f32(*set.find("a.weight"), out.data());
    EXPECT_EQ(out, a);
}

TEST(Safetensors, MissingFileIsIo) {
    try {
        SafetensorsFile f(starkv_test::temp_dir() + "/no/such.safetensors");
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_IO);
    }
}

TEST(Safetensors, TruncatedAtEveryOffset) {
    std::vector<float> a = {1, 2, 3, 4, 5, 6};
    std::vector<uint16_t> b = {0x3c00, 0x4000, 0xc000};
    const std::string full =
        st_serialize({{"a", "F32", {2, 3}, raw(a)}, {"b", "BF16", {3}, raw(b)}});
    ASSERT_EQ(try_read(write_file("full.safetensors", full)), STARKV_OK);
    for (size_t n = 0; n < full.size(); ++n) {
        const starkv_status s = try_read(write_file("trunc.safetensors", full.substr(0, n)));
        ASSERT_EQ(s, STARKV_ERR_CORRUPT) << "truncated to " << n << " bytes";
    }
}

TEST(Safetensors, RandomByteFlipsNeverCrash) {
    std::vector<float> a = {1, 2, 3, 4, 5, 6};
    const std::string full = st_serialize({{"a", "F32", {2, 3}, raw(a)}, {"b", "F16", {2}, "abcd"}});
    std::mt19937 rng(9);
    for (int i = 0; i < 400; ++i) {
        std::string s = full;
        const size_t pos = rng() % s.size();
        s[pos] = static_cast<char>(rng() & 0xff);
        const starkv_status st = try_read(write_file("flip.safetensors", s));
        ASSERT_TRUE(st == STARKV_OK || st == STARKV_ERR_CORRUPT || st == STARKV_ERR_UNSUPPORTED)
            << st;
    }
}

TEST(Safetensors, HeaderLengthPastEof) {
    const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    std::string f = u64le(header.size() + 5) + header + "abcd";  // claims 1 byte past EOF
    EXPECT_EQ(try_read(write_file("hl.safetensors", f)), STARKV_ERR_CORRUPT);
    f = u64le(~uint64_t{0}) + header + "abcd";  // would overflow 8 + len
    EXPECT_EQ(try_read(write_file("hl2.safetensors", f)), STARKV_ERR_CORRUPT);
    f = u64le(uint64_t{1} << 40) + header + "abcd";  // huge: must not allocate
    EXPECT_EQ(try_read(write_file("hl3.safetensors", f)), STARKV_ERR_CORRUPT);
    f = u64le(0) + "abcd";  // empty header
    EXPECT_EQ(try_read(write_file("hl4.safetensors", f)), STARKV_ERR_CORRUPT);
}

TEST(Safetensors, BadOffsets) {
    const std::string data(64, '\0');
    // Past the data section.
    EXPECT_EQ(header_status("o1.safetensors",
                            R"({"a":{"dtype":"F32","shape":[16],"data_offsets":[4,68]}})", data),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(header_status("o2.safetensors",
                            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,0]}})"),
              STARKV_ERR_CORRUPT);
    // begin > end.
    EXPECT_EQ(header_status("o3.safetensors",
                            R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})"),
              STARKV_ERR_CORRUPT);
    // Size disagrees with shape * dtype.
    EXPECT_EQ(header_status("o4.safetensors",
                            R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})"),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(header_status("o5.safetensors",
                            R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})"),
              STARKV_ERR_CORRUPT);
    // Overlapping tensors.
    EXPECT_EQ(header_status("o6.safetensors",
                            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}})"),
              STARKV_ERR_CORRUPT);
    // Huge shape whose product overflows 64 bits yet matches a small size mod 2^64.
    EXPECT_EQ(header_status("o7.safetensors",
                            R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,1],"data_offsets":[0,0]}})"),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(header_status("o8.safetensors",
                            R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})"),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(header_status("o9.safetensors",
                            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})"),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(header_status("o10.safetensors",
                            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0.5,4]}})"),
              STARKV_ERR_CORRUPT);
    // Adjacent, non-overlapping tensors are fine.
    EXPECT_EQ(header_status("ok.safetensors",
                            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})"),
              STARKV_OK);
}

TEST(Safetensors, UnknownDtypeIsUnsupported) {
    try {
        SafetensorsFile f(write_file(
            "dt.safetensors",
            st_serialize_header(R"({"a":{"dtype":"Q9_9","shape":[4],"data_offsets":[0,4]}})",
                                "abcd")));
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_UNSUPPORTED);
        EXPECT_NE(std::string(e.what()).find("Q9_9"), std::string::npos) << e.what();
    }
    EXPECT_EQ(header_status("dt2.safetensors", R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})"),
              STARKV_ERR_CORRUPT);
}

TEST(Safetensors, BadJson) {
    for (const char* h : {"", "{", "not json", "[1,2,3]", "null", R"({"a":1})",
                          R"({"a":{"shape":[1],"data_offsets":[0,4]}})",
                          R"({"a":{"dtype":"F32","data_offsets":[0,4]}})",
                          R"({"a":{"dtype":"F32","shape":{},"data_offsets":[0,4]}})",
                          R"({"a":{"dtype":"F32","shape":[1,2,3,4,5,6,7,8,9],"data_offsets":[0,4]}})",
                          "{\"a\":\"\xff\xfe\"}"}) {
        EXPECT_EQ(header_status("json.safetensors", h), STARKV_ERR_CORRUPT) << h;
    }
    // Deep nesting inside __metadata__ must not blow the stack either.
    std::string deep = R"({"__metadata__":)" + std::string(20000, '[') + std::string(20000, ']') + "}";
    const starkv_status s = header_status("deep.safetensors", deep);
    EXPECT_TRUE(s == STARKV_OK || s == STARKV_ERR_CORRUPT);
}

TEST(Safetensors, ShardedIndex) {
    namespace fs = std::filesystem;
    const std::string dir = starkv_test::temp_dir() + "/st_sharded";
    fs::create_directories(dir);
    std::vector<float> a = {1, 2, 3, 4}, b = {5, 6}, c = {7};
    std::ofstream(dir + "/model-00001-of-00002.safetensors", std::ios::binary)
        << st_serialize({{"a", "F32", {2, 2}, raw(a)}, {"b", "F32", {2}, raw(b)}});
    std::ofstream(dir + "/model-00002-of-00002.safetensors", std::ios::binary)
        << st_serialize({{"c", "F32", {1}, raw(c)}});
    json idx = {{"metadata", {{"total_size", 28}}},
                {"weight_map",
                 {{"a", "model-00001-of-00002.safetensors"},
                  {"b", "model-00001-of-00002.safetensors"},
                  {"c", "model-00002-of-00002.safetensors"}}}};
    std::ofstream(dir + "/model.safetensors.index.json") << idx.dump();

    SafetensorsSet set = SafetensorsSet::open_dir(dir);
    std::vector<float> out(4);
    set.read_f32(*set.find("a"), out.data());
    EXPECT_EQ(out, a);
    out.resize(1);
    set.read_f32(*set.find("c"), out.data());
    EXPECT_EQ(out, c);
    EXPECT_EQ(set.tensor_infos().size(), 3u);
    EXPECT_EQ(set.find("zzz"), nullptr);

    auto status_of = [&](const json& j) {
        std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc) << j.dump();
        try {
            SafetensorsSet::open_dir(dir);
            return STARKV_OK;
        } catch (const Error& e) {
            return e.status();
        }
    };
    // Tensor listed in the wrong shard.
    EXPECT_EQ(status_of({{"weight_map", {{"c", "model-00001-of-00002.safetensors"}}}}),
              STARKV_ERR_CORRUPT);
    // Shard missing.
    EXPECT_EQ(status_of({{"weight_map", {{"a", "model-00003-of-00003.safetensors"}}}}), STARKV_ERR_IO);
    // Paths outside the directory.
    EXPECT_EQ(status_of({{"weight_map", {{"a", "../st_sharded/model-00001-of-00002.safetensors"}}}}),
              STARKV_ERR_CORRUPT);
    EXPECT_EQ(status_of({{"weight_map", {{"a", 3}}}}), STARKV_ERR_CORRUPT);
    EXPECT_EQ(status_of({{"weight_map", json::array()}}), STARKV_ERR_CORRUPT);
    EXPECT_EQ(status_of(json::array()), STARKV_ERR_CORRUPT);
    std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc) << "{\"weight_map\": {";
    try {
        SafetensorsSet::open_dir(dir);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
    }

    // Neither file: IO.
    const std::string empty = starkv_test::temp_dir() + "/st_empty";
    fs::create_directories(empty);
    try {
        SafetensorsSet::open_dir(empty);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_IO);
    }
}
