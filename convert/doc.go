// Package convert turns checkpoints (llama2.c, GGUF, Hugging Face
// safetensors directories) and synthetic random models into standard ONNX
// causal-LM decoders with a KV cache in optimum's I/O convention.
//
// Each format has a reader (one file per format or architecture) that
// yields a Checkpoint: a Config and Hugging Face–named tensors with a
// single layout. The builder turns any Checkpoint into ONNX, streaming one
// tensor at a time.
package convert
