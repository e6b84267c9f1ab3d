package convert

import (
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Opset and IR version of the built models: opset 17 has every op the
// graphs use (LayerNormalization is the newest), IR 8 is its version.
const (
	buildOpset     = 17
	buildIRVersion = 8
)

// BuildOptions control Build. The zero value writes float32 weights.
type BuildOptions struct {
	// DType is the stored weights' type. Float16 halves the files and
	// the reading at load time; every weight is cast to float32 where it
	// is used (an embedding only for the gathered rows), so norms,
	// softmax and all arithmetic stay float32 and the graph runs on any
	// execution provider. onnxruntime folds those Casts when it loads the
	// model, so in memory the weights are float32 again (a 1.2B model:
	// 2.2 GiB file, ~4.9 GiB resident, as its float32 build).
	DType DType
	// TokenizerFiles are copied beside the model under their base names.
	TokenizerFiles []string
	// ExternalAbove is the total size of the stored weights above which
	// they go to one external data file (<model>.data) instead of the
	// protobuf; 0 means graph.AutoExternalBytes (1 GiB).
	ExternalAbove int64
	// Progress, if set, is called after each tensor with the bytes of
	// weights written so far and the total.
	Progress func(done, total int64)
}

// Build writes the ONNX model of ck to outPath: a causal-LM decoder with
// a KV cache in optimum's I/O convention (see decoderIO), standard ONNX
// ops only (opset 17). Beside it go config.json (Hugging Face),
// genai_config.json (onnxruntime-genai), the tokenizer files, and, when
// the weights exceed ExternalAbove, <model>.data.
//
// Node names follow Hugging Face module paths (/model/layers.N/…,
// /transformer/h.N/…) and initializers keep the checkpoint's names. Linear
// weights are stored transposed, [in, out], so each projection is a plain
// MatMul; embeddings, norms, biases and GPT-2's Conv1D weights are stored
// as the checkpoint holds them. A tied LM head reads the embedding
// initializer through a Transpose, so it is stored once.
//
// Build streams: it reads one tensor at a time, converting and
// transposing it on the way to the file while a second goroutine writes
// what is ready. Tensors a reader found in a file as they are (float32
// safetensors; GGUF and llama2.c tensors that need no reordering) skip
// Read: kept float32 bytes are copied by the kernel, float32 tensors to
// transpose are mapped into memory, the rest are read into one reused
// buffer. Everything is written to temporary files in the destination
// directory and renamed at the end (the model last); on error nothing is
// left behind. Build does not close ck.
func Build(ck Checkpoint, outPath string, opts BuildOptions) (err error) {
	if opts.DType == "" {
		opts.DType = Float32
	}
	if opts.DType != Float32 && opts.DType != Float16 {
		return fmt.Errorf("convert: unsupported dtype %q (want float32 or float16)", opts.DType)
	}
	if opts.ExternalAbove <= 0 {
		opts.ExternalAbove = graph.AutoExternalBytes
	}
	cfg := ck.Config()
	if err := checkBuildConfig(cfg); err != nil {
		return fmt.Errorf("convert: invalid config: %w", err)
	}
	plan, err := planWeights(cfg, ck.Tensors())
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	dir, name := filepath.Dir(outPath), filepath.Base(outPath)
	dataName := name + ".data"
	reserved := map[string]bool{name: true, dataName: true, "config.json": true, "genai_config.json": true}
	for _, f := range opts.TokenizerFiles {
		if reserved[filepath.Base(f)] {
			return fmt.Errorf("convert: tokenizer file %s would overwrite the model's own %s", f, filepath.Base(f))
		}
		if fi, err := os.Stat(f); err != nil {
			return fmt.Errorf("convert: tokenizer file: %w", err)
		} else if fi.IsDir() {
			return fmt.Errorf("convert: tokenizer file %s is a directory", f)
		}
	}
	if err := checkOutputDir(dir); err != nil {
		return fmt.Errorf("convert: %w", err)
	}

	model := decoderModel(cfg, opts.DType)
	var total int64
	for _, p := range plan {
		total += storedBytes(p, opts.DType)
	}
	src := newWeightSource(plan, newTensorEncoder(opts.DType))
	if opts.Progress != nil {
		src.progress = func(done int64) { opts.Progress(done, total) }
	}

	out := &outputSet{dir: dir, keystone: name}
	defer func() {
		if err != nil {
			out.abort()
			err = fmt.Errorf("convert: %s: %w", outPath, err)
		}
	}()
	if total > opts.ExternalAbove {
		if err := writeExternalModel(out, model, src, opts.DType, name, dataName); err != nil {
			return err
		}
	} else {
		f, err := out.create(name)
		if err != nil {
			return err
		}
		if err := closeAfter(f, writeInline(f, model, src, opts.DType)); err != nil {
			return err
		}
	}

	hf, err := hfConfigJSON(cfg, opts.DType)
	if err != nil {
		return err
	}
	if err := out.writeFile("config.json", hf); err != nil {
		return err
	}
	genai, err := genaiConfigJSON(cfg, name)
	if err != nil {
		return err
	}
	if err := out.writeFile("genai_config.json", genai); err != nil {
		return err
	}
	for _, f := range opts.TokenizerFiles {
		if err := out.copyFile(filepath.Base(f), f); err != nil {
			return err
		}
	}
	return out.commit()
}

// writeExternalModel streams the weights into the data file, then writes
// the (small) protobuf that refers to them.
func writeExternalModel(out *outputSet, model *onnxpb.ModelProto, src *weightSource, dt DType, name, dataName string) error {
	df, err := out.create(dataName)
	if err != nil {
		return err
	}
	inits, err := writeExternal(df, dataName, src, dt)
	if err = closeAfter(df, err); err != nil {
		return err
	}
	model.Graph.Initializer = append(model.Graph.Initializer, inits...)
	data, err := proto.Marshal(model)
	if err != nil {
		return err
	}
	return out.writeFile(name, data)
}

// decoderModel builds the model's graph without weight initializers (the
// writers add them).
func decoderModel(cfg Config, dt DType) *onnxpb.ModelProto {
	b := newGraphBuilder(dt == Float16)
	if cfg.Family == FamilyGPT2 {
		b.gpt2Decoder(cfg)
	} else {
		b.llamaDecoder(cfg)
	}
	inputs, outputs := decoderIO(cfg)
	return &onnxpb.ModelProto{
		IrVersion:    proto.Int64(buildIRVersion),
		ProducerName: proto.String("onnxprune"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(buildOpset)}},
		Graph: &onnxpb.GraphProto{
			Name:   proto.String(modelType(cfg)),
			Node:   b.nodes,
			Input:  inputs,
			Output: outputs,
		},
	}
}
