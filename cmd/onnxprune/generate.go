package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

	ort "github.com/onnxprune/onnxprune/runtime"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:      "generate",
		Usage:     "generate text with the KV cache (greedy, or sampled with a seed)",
		ArgsUsage: "MODEL.onnx",
		Description: `Encodes --prompt with BOS first, then decodes token by token through the KV
cache, printing text as it comes. Stops after --max-tokens, at EOS, or at BOS
(llama2.c models end a story with BOS, as run.c does).

Examples:
  onnxprune generate model.onnx --max-tokens 200                      # from BOS, greedy
  onnxprune generate model.onnx --prompt "Once upon a time" --temperature 0.8 --top-p 0.9 --seed 7`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "prompt", Usage: "text to continue (default: nothing, start from BOS)"},
			&cli.IntFlag{Name: "max-tokens", Value: 256, Usage: "tokens to generate at most"},
			&cli.FloatFlag{Name: "temperature", Usage: "0 = greedy; above 0 samples from softmax(logits/T)"},
			&cli.FloatFlag{Name: "top-p", Value: 1, Usage: "nucleus sampling: keep the most likely tokens up to this probability"},
			&cli.IntFlag{Name: "seed", Value: 1, Usage: "random seed for sampling"},
			&cli.BoolFlag{Name: "no-cache", Usage: "recompute the whole sequence each step (slow; a check of the cache)"},
			&cli.StringFlag{Name: "tokenizer", Usage: "tokenizer file or directory (default: the model's directory)"},
			&cli.BoolFlag{Name: "json", Usage: "print {text, ids, tokens_per_second} instead of streaming"},
		}, runtimeFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("generate: want one MODEL argument, got %d", cmd.NArg())
			}
			if cmd.Int("max-tokens") <= 0 || cmd.Float("temperature") < 0 || cmd.Float("top-p") <= 0 || cmd.Float("top-p") > 1 {
				return usagef("generate: --max-tokens must be positive, --temperature ≥ 0, --top-p in (0, 1]")
			}
			path := cmd.Args().First()
			tok, err := loadTokenizer(cmd, path)
			if err != nil {
				return err
			}
			ro, err := runtimeOptions(cmd)
			if err != nil {
				return err
			}
			sess, err := ort.NewSession(path, ro)
			if err != nil {
				return err
			}
			defer sess.Close()
			dec, err := ort.NewDecoder(sess)
			if err != nil {
				return err
			}
			if tok.BOS() < 0 {
				return fmt.Errorf("%s: the tokenizer has no BOS token to start from", path)
			}
			prompt := append([]int{tok.BOS()}, tok.Encode(cmd.String("prompt"))...)
			var stop []int
			for _, id := range []int{tok.EOS(), tok.BOS()} {
				if id >= 0 {
					stop = append(stop, id)
				}
			}
			w := cmd.Root().Writer
			asJSON := cmd.Bool("json")
			prev := prompt[len(prompt)-1]
			if !asJSON {
				fmt.Fprint(w, tok.Decode(prompt))
			}
			start := time.Now()
			ids, err := dec.Generate(ctx, prompt, ort.GenerateOptions{
				MaxTokens: int(cmd.Int("max-tokens")), Temperature: cmd.Float("temperature"), TopP: cmd.Float("top-p"),
				Seed: uint64(cmd.Int("seed")), Stop: stop, NoCache: cmd.Bool("no-cache"),
				OnToken: func(id int) {
					if !asJSON {
						fmt.Fprint(w, tok.DecodeToken(prev, id))
					}
					prev = id
				},
			})
			if err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			if asJSON {
				b, _ := json.MarshalIndent(map[string]any{
					"text": tok.Decode(ids), "ids": ids, "prompt_ids": prompt,
					"tokens_per_second": float64(len(ids)) / el,
				}, "", "  ")
				_, err := fmt.Fprintf(w, "%s\n", b)
				return err
			}
			fmt.Fprintln(w)
			logf(cmd, "%d tokens, %.1f tokens/s", len(ids), float64(len(ids))/el)
			return nil
		},
	}
}
