package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/tokenizer"
)

func tokenizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "tokenize",
		Usage:     "show the token ids of a text, or decode ids back to text",
		ArgsUsage: "TEXT...",
		Description: `Encodes TEXT (the arguments joined by spaces, or --file) with a model's
tokenizer and prints one line per token: position, id, vocabulary piece and the
text it stands for. --decode prints the text of a list of ids instead.

The tokenizer is a tokenizer.json (Hugging Face), a SentencePiece .model, a
llama2.c .bin, or a directory holding one of them.

Examples:
  onnxprune tokenize --tokenizer models/llama3 "Hello, world!"
  onnxprune tokenize --tokenizer tok512.bin --bos --json "Once upon a time"
  onnxprune tokenize --tokenizer tok512.bin --file story.txt --json | jq .count
  onnxprune tokenize --tokenizer tok512.bin --decode 1,403,407,261`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tokenizer", Aliases: []string{"t"}, Usage: "tokenizer file or model directory (required)"},
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the text from `FILE` (- for stdin) instead of the arguments"},
			&cli.BoolFlag{Name: "bos", Usage: "put the BOS token first, as a prompt would have it"},
			&cli.StringFlag{Name: "decode", Usage: "decode `IDS` (comma- or space-separated) instead of encoding"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			// Checked here rather than with Required, whose message
			// urfave/cli prints on its own, over several lines.
			path := cmd.String("tokenizer")
			if path == "" {
				return usagef("tokenize: --tokenizer is required (a tokenizer file or model directory)")
			}
			text, ids, decode, err := tokenizeInput(cmd)
			if err != nil {
				return err
			}
			tok, err := tokenizer.Load(path)
			if err != nil {
				return err
			}
			w := cmd.Root().Writer
			if decode {
				for _, id := range ids {
					if id < 0 || id >= tok.VocabSize() {
						return fmt.Errorf("tokenize: id %d is outside the vocabulary of %s (0…%d)", id, path, tok.VocabSize()-1)
					}
				}
				return printDecoded(w, tok, ids, cmd.Bool("json"))
			}
			ids = tok.Encode(text)
			if cmd.Bool("bos") {
				if tok.BOS() < 0 {
					return fmt.Errorf("tokenize: %s has no BOS token", path)
				}
				ids = append([]int{tok.BOS()}, ids...)
			}
			return printTokens(w, tok, path, ids, cmd.Bool("json"))
		},
	}
}

// tokenizeInput reads the text to encode or the ids to decode, checking
// that exactly one source was given.
func tokenizeInput(cmd *cli.Command) (text string, ids []int, decode bool, err error) {
	file, list := cmd.String("file"), cmd.String("decode")
	sources := 0
	for _, given := range []bool{cmd.NArg() > 0, file != "", cmd.IsSet("decode")} {
		if given {
			sources++
		}
	}
	if sources != 1 {
		return "", nil, false, usagef("tokenize: give exactly one of TEXT, --file or --decode (see onnxprune tokenize --help)")
	}
	switch {
	case cmd.IsSet("decode"):
		fields := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
		if len(fields) == 0 {
			return "", nil, false, usagef("tokenize: --decode wants ids such as 1,2,3")
		}
		for _, f := range fields {
			id, err := strconv.Atoi(f)
			if err != nil {
				return "", nil, false, usagef("tokenize: --decode: %q is not a token id", f)
			}
			ids = append(ids, id)
		}
		return "", ids, true, nil
	case file == "-":
		b, err := io.ReadAll(cmd.Root().Reader)
		return string(b), nil, false, err
	case file != "":
		b, err := os.ReadFile(file)
		return string(b), nil, false, err
	}
	return strings.Join(cmd.Args().Slice(), " "), nil, false, nil
}

// TokenizeReport is `tokenize --json`.
type TokenizeReport struct {
	Tokenizer string   `json:"tokenizer"`
	Count     int      `json:"count"`
	IDs       []int    `json:"ids"`
	Pieces    []string `json:"pieces"` // vocabulary entries
	Texts     []string `json:"texts"`  // DecodeToken of each id after the one before
}

func printTokens(w io.Writer, tok tokenizer.Tokenizer, path string, ids []int, asJSON bool) error {
	r := TokenizeReport{Tokenizer: path, Count: len(ids), IDs: ids, Pieces: []string{}, Texts: []string{}}
	if r.IDs == nil {
		r.IDs = []int{}
	}
	prev := -1
	for _, id := range ids {
		r.Pieces = append(r.Pieces, tok.Piece(id))
		r.Texts = append(r.Texts, tok.DecodeToken(prev, id))
		prev = id
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "pos\tid\tpiece\ttext\n")
	for i, id := range ids {
		fmt.Fprintf(tw, "%d\t%d\t%q\t%q\n", i, id, r.Pieces[i], r.Texts[i])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d tokens\n", len(ids))
	return err
}

func printDecoded(w io.Writer, tok tokenizer.Tokenizer, ids []int, asJSON bool) error {
	text := tok.Decode(ids)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			IDs  []int  `json:"ids"`
			Text string `json:"text"`
		}{ids, text})
	}
	_, err := fmt.Fprintln(w, text)
	return err
}
