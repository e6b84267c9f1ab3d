// Command onnxprune makes ONNX language models smaller and faster after
// training: it finds their decoder blocks, measures which are redundant,
// removes them, heals and evaluates the result.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v3"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr))
}

// run executes the CLI and returns the exit code. Errors are printed as
// one line: "onnxprune: <what>: <why>".
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.Run(ctx, args)
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintf(stderr, "onnxprune: %s\n", msg)
	var ue usageError
	if errors.As(err, &ue) || isCLIUsageError(err) {
		return exitUsage
	}
	return exitFailure
}

// isCLIUsageError recognises urfave/cli's own flag-parsing errors.
func isCLIUsageError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "flag provided but not defined") ||
		strings.Contains(s, "invalid value") ||
		strings.Contains(s, "No help topic") ||
		strings.Contains(s, "Required flag")
}

func newApp(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "onnxprune",
		Usage: "make ONNX language models smaller and faster after training",
		Description: `onnxprune works directly on ONNX decoders (optimum / torch / onnxruntime-genai
exports): it finds the decoder blocks, measures which are redundant through
onnxruntime, removes them with their KV-cache inputs and outputs, and checks the
result still runs anywhere onnxruntime runs.

Start with:  onnxprune inspect model.onnx`,
		Writer:                stdout,
		ErrWriter:             stderr,
		EnableShellCompletion: true,
		HideHelpCommand:       true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ort-lib", Usage: "libonnxruntime.so `FILE` to load (default: $ONNXRUNTIME_LIB, then the copy \"make setup\" installs)", Sources: cli.EnvVars("ONNXRUNTIME_LIB")},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only results and errors"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "also say which onnxruntime library, device and threads a command uses"},
		},
		ExitErrHandler: func(context.Context, *cli.Command, error) {}, // run prints and exits
		OnUsageError: func(_ context.Context, _ *cli.Command, err error, _ bool) error {
			return usageError{err.Error()}
		},
		Commands: []*cli.Command{
			inspectCommand(),
			convertCommand(),
			calibrateCommand(),
			pruneCommand(),
			sparsifyCommand(),
			shrinkCommand(),
			evalCommand(),
			tokenizeCommand(),
			generateCommand(),
			benchCommand(),
			sweepCommand(),
			healCommand(),
		},
	}
}
