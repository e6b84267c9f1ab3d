package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v3"

	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// runtimeFlags are shared by every command that runs a model.
func runtimeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "execution device: cpu or cuda (CUDA never falls back to CPU)"},
		&cli.IntFlag{Name: "threads", Usage: "onnxruntime intra-op threads (0: one per core)"},
	}
}

// runtimeOptions initialises onnxruntime and returns session options
// from the shared flags.
func runtimeOptions(cmd *cli.Command) (ort.Options, error) {
	dev := cmd.String("device")
	if dev != "cpu" && dev != "cuda" {
		return ort.Options{}, usagef("--device %q: want cpu or cuda", dev)
	}
	lib, err := ort.FindLibrary(cmd.String("ort-lib"))
	if err != nil {
		return ort.Options{}, err
	}
	if err := ort.Init(lib); err != nil {
		return ort.Options{}, err
	}
	if cmd.Bool("verbose") {
		fmt.Fprintf(cmd.Root().ErrWriter, "onnxruntime %s from %s; device %s, threads %d (0: one per core)\n",
			ort.Version(), lib, dev, cmd.Int("threads"))
	}
	return ort.Options{Device: dev, Threads: int(cmd.Int("threads"))}, nil
}

// loadTokenizer takes --tokenizer (a file or directory), else looks
// beside the model.
func loadTokenizer(cmd *cli.Command, modelPath string) (tokenizer.Tokenizer, error) {
	p := cmd.String("tokenizer")
	if p == "" {
		p = filepath.Dir(modelPath)
	}
	tok, err := tokenizer.Load(p)
	if err != nil && cmd.String("tokenizer") == "" {
		return nil, fmt.Errorf("%w (pass --tokenizer FILE)", err)
	}
	return tok, err
}

// progress draws a one-line bar on stderr when it is a terminal and the
// user did not ask for --quiet; otherwise it stays silent.
type progress struct {
	w     io.Writer
	label string
	start time.Time
	on    bool
	pause bool
}

// pauseEnv names a progress label at which the process stops after the
// first unit of work until it receives SIGINT or SIGTERM — a test hook
// that makes "interrupted in the middle of calibration" deterministic.
const pauseEnv = "ONNXPRUNE_TEST_PAUSE_IN"

func newProgress(cmd *cli.Command, label string) *progress {
	on := !cmd.Bool("quiet") && isTerminal(os.Stderr)
	pause := label != "" && os.Getenv(pauseEnv) == label
	return &progress{w: cmd.Root().ErrWriter, label: label, start: time.Now(), on: on, pause: pause}
}

func (p *progress) update(done, total int) {
	if p.pause && done >= 1 && done < total {
		p.pause = false
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		fmt.Fprintf(p.w, "onnxprune: %s=%s: paused after %d/%d, waiting for SIGINT\n", pauseEnv, p.label, done, total)
		<-ch
		signal.Stop(ch)
	}
	if !p.on || total <= 0 {
		return
	}
	const width = 30
	filled := width * done / total
	el := time.Since(p.start)
	left := time.Duration(0)
	if done > 0 {
		left = el * time.Duration(total-done) / time.Duration(done)
	}
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d  %s elapsed, %s left ", p.label,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, total,
		el.Round(100*time.Millisecond), left.Round(time.Second))
	if done == total {
		fmt.Fprintln(p.w)
	}
}

// logf prints a status line on stderr unless --quiet.
func logf(cmd *cli.Command, format string, args ...any) {
	if !cmd.Bool("quiet") {
		fmt.Fprintf(cmd.Root().ErrWriter, format+"\n", args...)
	}
}

// isTerminal reports whether w is a character device (a terminal), where
// progress lines belong; pipes and files get none.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// modelAndOutput checks the usage shared by the commands that rewrite a
// model: one MODEL argument and -o OUTDIR.
func modelAndOutput(cmd *cli.Command) (model, outDir string, err error) {
	if cmd.NArg() != 1 {
		return "", "", usagef("%s: want one MODEL argument, got %d", cmd.Name, cmd.NArg())
	}
	if cmd.String("output") == "" {
		return "", "", usagef("%s: -o OUTDIR is required", cmd.Name)
	}
	return cmd.Args().First(), cmd.String("output"), nil
}
