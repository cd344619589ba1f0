package ai.starkv;

/** Architecture, dimensions, tokenizer and special tokens of a model ({@code starkv_model_info}). */
public record ModelInfo(String architecture, String name, String format, int nVocab, int nEmbd, int nLayer,
                        int nHead, int nHeadKv, int headDim, int nFf, int nCtxTrain, float ropeTheta,
                        int ropeScaling, float ropeScalingFactor, float rmsNormEps, boolean tiedEmbeddings,
                        int tokenizer, int bosToken, int eosToken, int unkToken, int padToken, long nParams) {
    static ModelInfo of(starkv_model_info i) {
        return new ModelInfo(i.getArchitecture(), i.getName(), i.getFormat(), i.getN_vocab(), i.getN_embd(),
                i.getN_layer(), i.getN_head(), i.getN_head_kv(), i.getHead_dim(), i.getN_ff(), i.getN_ctx_train(),
                i.getRope_theta(), i.getRope_scaling(), i.getRope_scaling_factor(), i.getRms_norm_eps(),
                i.getTied_embeddings(), i.getTokenizer(), i.getBos_token(), i.getEos_token(), i.getUnk_token(),
                i.getPad_token(), i.getN_params());
    }
}
