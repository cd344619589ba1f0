// Quantized STAR-KV latents, calibration side (`starkv pack --kv-bits`):
// chooses per latent (each key head, each layer's value latent) the block
// size and the split between a leading group of channels at more bits and
// the tail at fewer, minimising the activation error measured on calibration
// latents, each latent's error weighted by its measured sensitivity, at the
// requested average bits, and folds the Hadamard rotation into the factors.
// Runs after the low-rank factors are final.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"

namespace starkv::quant {

struct Options {
    double avg_bits = 0;    // bits per latent channel, scales and padding included; 0 = fp32 latents
    int block = 0;          // 0 = auto (per latent), else 8..128 (capped at the latent's padded rank)
    bool hadamard = true;   // rotate the blocks (off: the ablation)
    bool mixed = true;      // leading/tail split; false = one bit width everywhere (round(avg_bits))
    int sample_tokens = 1024;  // calibration tokens whose latents are measured
    int plain_bits = 0;     // layers kept plain (skip layers): K/V rows at 8 or 4 bits; 0 = fp32
    // Calibration tokens on which each latent's sensitivity is probed (those
    // after the sampled ones where the text holds enough, else the first; the KL
    // of the output when only that latent is quantized, per unit of its
    // squared error); 0 = plan by squared error alone (the ablation).
    int probe_tokens = 512;
    // Probe rounds: each re-measures the sensitivities at the previous round's
    // plan (the KL is not linear in the error) and plans again; the plan of
    // least probe KL over all rounds (and the squared-error plan) is kept.
    int probe_rounds = 1;
};

// The choice for one latent among its candidates, given its per-group errors.
struct Candidate {
    LatentQuant q;
    double error = 0;  // relative activation error ||U (z - z^)||^2 / ||U z||^2 on the sample
    double bits = 0;   // bits per token, scales and padding included
};

// Plans, folds and installs the quantization of every latent of the model's
// compressed layers, measuring on the calibration sequences. Returns the
// plan's metadata (compression.kv_quant of the bundle).
nlohmann::json plan_and_fold(Model& model, const std::vector<std::vector<int32_t>>& calib, const Options& opt,
                             int seq_len, int n_threads);

// The largest block the runtime allows for a latent of rank r and maximum
// width max_width when `requested` (0 = any) is asked: a power of two in
// [8, 128], at most the rank rounded up to a power of two; 0 when none fits.
int block_for(int r, int max_width, int requested);

}  // namespace starkv::quant
