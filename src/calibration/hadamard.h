// Block-diagonal Hadamard rotations of STAR-KV latents. A latent z = A x is
// replaced by H z (H = diag(H_B, ..., H_B), each H_B the normalised Sylvester
// Hadamard matrix, symmetric and orthogonal) and U by U H, so U A is
// unchanged while each block's energy is spread evenly over its channels:
// one scale per block then quantizes it well. Folded at pack time; the
// runtime never rotates.
#pragma once

#include "model/weights.h"

namespace starkv::hadamard {

// In place on n values (n a multiple of block, block a power of two):
// x <- H x, blocks of `block` channels each rotated by H_block.
void rotate(float* x, int n, int block);

// Pads A (rows) and U (columns) with zeros to `width` channels and folds the
// rotation in: A <- H A, U <- U H. With rotate == false only pads.
void fold(Matrix& a, Matrix& u, int width, int block, bool rotate);

}  // namespace starkv::hadamard
