package main

import (
	"math"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/eval"
)

// energyFlags configure the energy meter of every command that reports
// energy (eval --task xsum, bench, sweep). Flags of eval tasks share one
// command, so there only one task may add these.
func energyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.FloatFlag{Name: "watts-per-core", Value: eval.DefaultWattsPerCore,
			Usage: "assumed power of one busy core, used when RAPL cannot be read: energy = process CPU time × this, reported as \"estimated\""},
		&cli.FloatFlag{Name: "grid-intensity", Value: eval.DefaultGridIntensity,
			Usage: "carbon intensity of the electricity in gCO2e/kWh (475: the world average); CO2e = kWh × this"},
		&cli.StringFlag{Name: "powercap", Value: eval.DefaultPowercapRoot,
			Usage: "directory of the RAPL zones (intel-rapl:N/energy_uj)"},
	}
}

// newEnergyMeter builds a meter from energyFlags. GPU energy (NVML) is
// added when the model runs on CUDA (--device cuda), since NVML counts
// the whole GPU whether the work used it or not.
func newEnergyMeter(cmd *cli.Command) (*eval.Meter, error) {
	w, g := cmd.Float("watts-per-core"), cmd.Float("grid-intensity")
	if w <= 0 || math.IsNaN(w) || math.IsInf(w, 0) || g < 0 || math.IsNaN(g) || math.IsInf(g, 0) {
		return nil, usagef("--watts-per-core must be positive and --grid-intensity not negative")
	}
	return eval.NewMeter(eval.MeterOptions{PowercapRoot: cmd.String("powercap"), WattsPerCore: w,
		GPU: cmd.String("device") == "cuda"}), nil
}

// energyReport puts a reading in kWh, CO2e (--grid-intensity), per sample
// and per generated token.
func energyReport(cmd *cli.Command, r eval.Reading, samples, tokens int) eval.EnergyReport {
	return eval.NewEnergyReport(r, cmd.Float("grid-intensity"), samples, tokens)
}
