// ModelConfig and Vocab <-> the JSON of a bundle's metadata section. Every
// field round-trips exactly (floats via 17 significant digits; strings that are
// not valid UTF-8 as {"hex": ...}). The readers check every type and throw
// Error(STARKV_ERR_CORRUPT); unknown keys are ignored (forward compatibility).
#pragma once

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "tokenizer/vocab.h"

namespace starkv::bundle {

nlohmann::json config_to_json(const ModelConfig& c);
ModelConfig config_from_json(const nlohmann::json& j);

nlohmann::json vocab_to_json(const Vocab& v);
Vocab vocab_from_json(const nlohmann::json& j);

}  // namespace starkv::bundle
