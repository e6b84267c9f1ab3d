package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/atomicfile"
)

// dataFlags say where calibration text comes from and how to batch it.
func dataFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data", Usage: "calibration text: a .txt file (samples separated by blank lines or <|endoftext|>) or .jsonl"},
		&cli.StringFlag{Name: "field", Usage: "JSONL field holding the text"},
		&cli.StringFlag{Name: "template", Usage: `JSONL template combining fields, e.g. "{passage}\nQuestion: {question}?"`},
		&cli.StringFlag{Name: "separator", Usage: "sample separator in a text file (default: <|endoftext|> if present, else blank lines)"},
		&cli.StringFlag{Name: "tokenizer", Usage: "tokenizer file or directory (default: the model's directory)"},
		&cli.IntFlag{Name: "samples", Value: 64, Usage: "number of samples to use (the first N)"},
		&cli.IntFlag{Name: "seq-len", Value: 256, Usage: "tokens per sample, BOS included (longer samples are truncated)"},
		&cli.IntFlag{Name: "batch-size", Value: 8, Usage: "samples per forward pass"},
	}
}

// calibrationBatches loads, tokenizes and batches the --data samples.
func calibrationBatches(cmd *cli.Command, modelPath string) ([]calib.Batch, int, error) {
	path := cmd.String("data")
	if path == "" {
		return nil, 0, usagef("--data FILE is required (e.g. ../shared/data/tinystories/validation.txt)")
	}
	if cmd.Int("samples") <= 0 || cmd.Int("seq-len") < 2 || cmd.Int("batch-size") <= 0 {
		return nil, 0, usagef("--samples and --batch-size must be positive and --seq-len at least 2")
	}
	samples, err := calib.LoadSamples(path, calib.TextOptions{
		Separator: cmd.String("separator"), Field: cmd.String("field"), Template: cmd.String("template")})
	if err != nil {
		return nil, 0, err
	}
	if n := int(cmd.Int("samples")); len(samples) > n {
		samples = samples[:n]
	}
	tok, err := loadTokenizer(cmd, modelPath)
	if err != nil {
		return nil, 0, err
	}
	seqs := calib.Tokenize(tok, samples, int(cmd.Int("seq-len")), true)
	if len(seqs) == 0 {
		return nil, 0, fmt.Errorf("%s: no sample tokenizes to more than BOS", path)
	}
	tokens := 0
	for _, s := range seqs {
		tokens += len(s)
	}
	return calib.Batches(seqs, int(cmd.Int("batch-size"))), tokens, nil
}

// StatsFile is stats.json: the statistics and how they were measured.
type StatsFile struct {
	Model   string  `json:"model"`
	Data    string  `json:"data"`
	SeqLen  int     `json:"seq_len"`
	BOS     bool    `json:"bos"`
	Seconds float64 `json:"seconds"`
	*calib.Stats
}

func calibrateCommand() *cli.Command {
	return &cli.Command{
		Name:      "calibrate",
		Usage:     "measure how redundant each block is: angular distance d(l, n), Block Influence",
		ArgsUsage: "MODEL.onnx",
		Description: `Runs calibration text through the model with taps on the residual stream at
every block boundary (h_0 … h_L) and streams float64 statistics; padding is
never measured. Writes stats.json and an SVG heatmap of d(l, n), and prints the
tables. Feed stats.json to "onnxprune prune --stats".

Examples:
  onnxprune calibrate model.onnx --data ../shared/data/tinystories/validation.txt
  onnxprune calibrate model.onnx --data c4.jsonl --field prefix --samples 128 -o stats.json`,
		Flags: append(append(dataFlags(), runtimeFlags()...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "stats.json", Usage: "statistics `FILE` to write"},
			&cli.StringFlag{Name: "heatmap", Usage: "SVG heatmap of d(l, n) (default: the stats file with .svg)"},
			&cli.BoolFlag{Name: "all-tokens", Usage: "show and draw d(l, n) averaged over all real tokens instead of the last one"},
			&cli.BoolFlag{Name: "json", Usage: "print stats.json to stdout instead of tables"},
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("calibrate: want one MODEL argument, got %d", cmd.NArg())
			}
			path := cmd.Args().First()
			sf, err := runCalibration(ctx, cmd, path)
			if err != nil {
				return err
			}
			out := cmd.String("output")
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return err
			}
			b, _ := json.MarshalIndent(sf, "", "  ")
			if err := writeFileAtomic(out, append(b, '\n')); err != nil {
				return err
			}
			svg := cmd.String("heatmap")
			if svg == "" {
				svg = strings.TrimSuffix(out, ".json") + ".svg"
			}
			var sb strings.Builder
			calib.WriteHeatmapSVG(&sb, sf.Stats, cmd.Bool("all-tokens"), "onnxprune calibrate: "+path)
			if err := writeFileAtomic(svg, []byte(sb.String())); err != nil {
				return err
			}
			w := cmd.Root().Writer
			if cmd.Bool("json") {
				_, err := w.Write(append(b, '\n'))
				return err
			}
			printStats(w, sf.Stats, cmd.Bool("all-tokens"))
			logf(cmd, "wrote %s and %s (%.1fs)", out, svg, sf.Seconds)
			return nil
		},
	}
}

// runCalibration loads the model and data and measures.
func runCalibration(ctx context.Context, cmd *cli.Command, path string) (*StatsFile, error) {
	m, err := graph.Load(path)
	if err != nil {
		return nil, err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return nil, err
	}
	batches, tokens, err := calibrationBatches(cmd, path)
	if err != nil {
		return nil, err
	}
	logf(cmd, "calibrating %s: %d blocks, %d batches, %d tokens", path, len(d.Blocks), len(batches), tokens)
	pr := newProgress(cmd, "calibrate")
	start := time.Now()
	st, err := calib.Calibrate(ctx, m, d, batches, calib.Options{Runtime: ro, Progress: pr.update})
	if err != nil {
		return nil, err
	}
	return &StatsFile{Model: path, Data: cmd.String("data"), SeqLen: int(cmd.Int("seq-len")), BOS: true,
		Seconds: time.Since(start).Seconds(), Stats: st}, nil
}

// printStats prints d(l, n) (rows n, columns l, * marks the best l) and
// the per-block Block Influence and mean cosine.
func printStats(w io.Writer, s *calib.Stats, allTokens bool) {
	where := "last real token"
	if allTokens {
		where = "all real tokens"
	}
	fmt.Fprintf(w, "angular distance d(l, n) over %d samples (%s); * = most redundant start for n\n", s.Samples, where)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "n \\ l\t")
	for l := range s.Layers {
		fmt.Fprintf(tw, "%d\t", l)
	}
	fmt.Fprintln(tw)
	for n := 1; n < s.Layers; n++ {
		best := 0
		for l := 0; l+n <= s.Layers; l++ {
			if s.Distance(l, n, allTokens) < s.Distance(best, n, allTokens) {
				best = l
			}
		}
		fmt.Fprintf(tw, "%d\t", n)
		for l := range s.Layers {
			switch {
			case l+n > s.Layers:
				fmt.Fprint(tw, "\t")
			case l == best:
				fmt.Fprintf(tw, "*%.4f\t", s.Distance(l, n, allTokens))
			default:
				fmt.Fprintf(tw, "%.4f\t", s.Distance(l, n, allTokens))
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nper block (%d real tokens)\n", s.Tokens)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "block\tBI\tmean-cos\td(l,1)\t")
	for l := range s.Layers {
		fmt.Fprintf(tw, "%d\t%.4f\t%.4f\t%.4f\t\n", l, s.BlockInfluence[l], s.MeanCosine[l], s.Distance(l, 1, allTokens))
	}
	tw.Flush()
}

// writeFileAtomic writes data to a temporary file beside path, then
// renames it: an interrupted run leaves the old file or none.
func writeFileAtomic(path string, data []byte) error { return atomicfile.Write(path, data) }
