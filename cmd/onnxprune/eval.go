package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/urfave/cli/v3"
)

// evalTask is one kind of measurement `onnxprune eval --task NAME` makes.
// Each task lives in its own file (eval_<name>.go) and is listed in
// evalTasks; flags shared by all tasks are defined here, task-specific
// ones by the task (names must not clash).
type evalTask struct {
	Name  string
	Usage string
	Flags []cli.Flag
	// Run measures model and returns a JSON-serializable result and its
	// human-readable rendering.
	Run func(ctx context.Context, cmd *cli.Command, model string) (result any, text string, err error)
}

// evalTasks lists the tasks; add a task here and in its own file.
func evalTasks() []evalTask {
	return []evalTask{
		pplTask(),
		boolqTask(),
		imdbTask(),
		xsumTask(),
	}
}

func evalCommand() *cli.Command {
	tasks := evalTasks()
	var names, lines []string
	flags := append(append(dataFlags(), runtimeFlags()...),
		&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
	)
	for _, t := range tasks {
		names = append(names, t.Name)
		lines = append(lines, fmt.Sprintf("  %-8s %s", t.Name, t.Usage))
		flags = append(flags, t.Flags...)
	}
	sort.Strings(names)
	return &cli.Command{
		Name:      "eval",
		Usage:     "measure a model: perplexity, zero-shot tasks, summarization",
		ArgsUsage: "MODEL.onnx",
		Description: "Tasks (--task):\n" + strings.Join(lines, "\n") + `

Every number says how it was measured (context, BOS policy, baseline).

Examples:
  onnxprune eval model.onnx --data ../shared/data/tinystories/validation.txt --samples 50
  onnxprune eval model.onnx --task boolq --data ../shared/data/boolq/boolq.jsonl --limit 200`,
		Flags: append(flags, &cli.StringFlag{Name: "task", Value: "ppl", Usage: "what to measure: " + strings.Join(names, ", ")}),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("eval: want one MODEL argument, got %d", cmd.NArg())
			}
			i := slices.IndexFunc(tasks, func(t evalTask) bool { return t.Name == cmd.String("task") })
			if i < 0 {
				return usagef("eval: unknown --task %q (tasks: %s)", cmd.String("task"), strings.Join(names, ", "))
			}
			res, text, err := tasks[i].Run(ctx, cmd, cmd.Args().First())
			if err != nil {
				return err
			}
			w := cmd.Root().Writer
			if cmd.Bool("json") {
				b, _ := json.MarshalIndent(res, "", "  ")
				_, err := fmt.Fprintf(w, "%s\n", b)
				return err
			}
			_, err = fmt.Fprintln(w, strings.TrimRight(text, "\n"))
			return err
		},
	}
}
