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
	"os/signal"
	"strings"
	"syscall"

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
	// SIGINT/SIGTERM cancel the context: commands stop at the next batch
	// and leave no partial output (every file is written to a temporary
	// name and renamed). A second signal kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
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
	app := &cli.Command{
		Name:  "onnxprune",
		Usage: "make ONNX language models smaller and faster after training",
		Description: `onnxprune works directly on ONNX decoders (optimum / torch / onnxruntime-genai
exports): it finds the decoder blocks, measures which are redundant through
onnxruntime, removes them with their KV-cache inputs and outputs, and checks the
result still runs anywhere onnxruntime runs.

Start with:
  onnxprune run                      inside the repository: the whole pipeline on
                                     the bundled stories260K model, report in
                                     onnxprune-run/
  onnxprune inspect model.onnx
  onnxprune run model.onnx --data valid.txt -o report/

Every command takes --help (with examples), and those that print results
--json. Progress bars appear only on a terminal; --quiet keeps to results and
errors, --verbose adds the onnxruntime library, device and threads. Exit status:
0 success, 1 failure, 2 usage error. Shell completion:
  source <(onnxprune completion bash)     (also zsh, fish)`,
		Writer:                stdout,
		ErrWriter:             stderr,
		EnableShellCompletion: true,
		HideHelpCommand:       true,
		Flags:                 globalFlags(),
		ExitErrHandler:        func(context.Context, *cli.Command, error) {}, // run prints and exits
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
			runCommand(),
		},
	}
	// A flag error in a command is one line and exit code 2, as at the root
	// (urfave/cli would print the whole help text).
	for _, c := range app.Commands {
		c.OnUsageError = app.OnUsageError
	}
	return app
}

// globalFlags are the root command's flags; run passes them on to the
// commands it runs as steps.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ort-lib", Usage: "libonnxruntime.so `FILE` to load (default: $ONNXRUNTIME_LIB, then the copy \"make setup\" installs)", Sources: cli.EnvVars("ONNXRUNTIME_LIB")},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only results and errors"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "also say which onnxruntime library, device and threads a command uses"},
	}
}
