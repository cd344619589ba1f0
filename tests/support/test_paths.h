// Where tests find ../shared (models, data, golden files).
#pragma once

#include <string>

namespace starkv_test {

std::string shared_path(const std::string& rel);  // e.g. "models/stories260K.gguf"
std::string stories_model();                       // the sample model
std::string read_file(const std::string& path);    // whole file; fails the test if missing
std::string temp_dir();                            // fresh directory for this test process

}  // namespace starkv_test
