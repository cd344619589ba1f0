package ai.starkv;

/** One entry of a model file's tensor table ({@code starkv_tensor_info}). */
public record TensorInfo(String name, String dtype, long[] shape, long offset, long nBytes) {}
