package eval

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Plots are drawn as SVG by hand, as calib's heatmap is: a sweep has a
// handful of points per series, which needs axes, ticks, error bars and a
// legend — not a plotting library and its fonts. Convert to PNG with e.g.
// `rsvg-convert -o quality.png quality.svg`.

// Plot is one panel: series of points against a shared x axis.
type Plot struct {
	Title, XLabel, YLabel string
	// LogY draws the y axis logarithmically (all values must be > 0).
	LogY bool
	// YFromZero extends a linear y axis down to 0, so that differences are
	// not exaggerated by a cropped axis.
	YFromZero bool
	// IntegerX puts x ticks on integers (blocks removed).
	IntegerX bool
	Series   []Series
}

// Series is one line. Lo and Hi, when set, draw a bar from Lo[i] to Hi[i]
// at each point (min–max of repeated runs); Labels, when set, are written
// beside the points.
type Series struct {
	Name   string
	X, Y   []float64
	Lo, Hi []float64
	Labels []string
	Dashed bool
	Color  string // CSS colour; "" picks from a plotPalette
}

var plotPalette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// Panel geometry, in pixels.
const (
	plotLeft, plotRight, plotTop, plotBottom = 72, 24, 34, 48
	legendRow, legendGap                     = 16, 12
	figureTitle                              = 30
)

// WriteSVG draws the panels side by side, each width × height pixels
// (plus room for its legend), under title.
func WriteSVG(w io.Writer, title string, width, height int, panels ...*Plot) error {
	rows := 0
	for _, p := range panels {
		rows = max(rows, len(p.Series))
	}
	W, H := width*max(len(panels), 1), figureTitle+height+legendGap+rows*legendRow
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold" text-anchor="middle">%s</text>`+"\n", W/2, svgEscape(title))
	for i, p := range panels {
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", i*width, figureTitle)
		if err := p.draw(&b, width, height); err != nil {
			return fmt.Errorf("eval: plot %q: %w", p.Title, err)
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// draw renders one panel at the origin.
func (p *Plot) draw(b *strings.Builder, width, height int) error {
	x0, x1 := float64(plotLeft), float64(width-plotRight)
	y0, y1 := float64(height-plotBottom), float64(plotTop) // y0 is the bottom
	xlo, xhi, ylo, yhi, err := p.ranges()
	if err != nil {
		return err
	}
	sx := func(x float64) float64 { return x0 + (x-xlo)/(xhi-xlo)*(x1-x0) }
	ty := func(y float64) float64 {
		if p.LogY {
			return math.Log10(y)
		}
		return y
	}
	sy := func(y float64) float64 { return y0 - (ty(y)-ty(ylo))/(ty(yhi)-ty(ylo))*(y0-y1) }

	fmt.Fprintf(b, `<text x="%.1f" y="18" font-size="13" font-weight="bold" text-anchor="middle">%s</text>`+"\n", (x0+x1)/2, svgEscape(p.Title))
	// Grid and ticks.
	for _, t := range p.yTicks(ylo, yhi) {
		y := sy(t.v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", x0, y, x1, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, y+4, t.label)
	}
	for _, t := range p.xTicks(xlo, xhi) {
		x := sx(t.v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", x, y0, x, y1)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, y0+16, t.label)
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", x0, y1, x1-x0, y0-y1)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", (x0+x1)/2, y0+36, svgEscape(p.XLabel))
	yl := p.YLabel
	if p.LogY {
		yl += " (log scale)"
	}
	fmt.Fprintf(b, `<text transform="translate(16,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (y0+y1)/2, svgEscape(yl))

	for i, s := range p.Series {
		color := s.Color
		if color == "" {
			color = plotPalette[i%len(plotPalette)]
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		var pts []string
		for j := range s.X {
			if !plotFinite(s.Y[j]) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(s.X[j]), sy(s.Y[j])))
		}
		fmt.Fprintf(b, `<polyline class="series" points="%s" fill="none" stroke="%s" stroke-width="2"%s><title>%s</title></polyline>`+"\n",
			strings.Join(pts, " "), color, dash, svgEscape(s.Name))
		for j := range s.X {
			if !plotFinite(s.Y[j]) {
				continue
			}
			x, y := sx(s.X[j]), sy(s.Y[j])
			if j < len(s.Lo) && j < len(s.Hi) && plotFinite(s.Lo[j]) && plotFinite(s.Hi[j]) && s.Hi[j] > s.Lo[j] {
				lo, hi := sy(s.Lo[j]), sy(s.Hi[j])
				fmt.Fprintf(b, `<path class="range" d="M%.1f,%.1fV%.1fM%.1f,%.1fH%.1fM%.1f,%.1fH%.1f" stroke="%s" stroke-width="1.3"/>`+"\n",
					x, lo, hi, x-4, lo, x+4, x-4, hi, x+4, color)
			}
			if !s.Dashed {
				fmt.Fprintf(b, `<circle class="point" cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: x=%s y=%s</title></circle>`+"\n",
					x, y, color, svgEscape(s.Name), formatTick(s.X[j]), formatTick(s.Y[j]))
			}
			if j < len(s.Labels) && s.Labels[j] != "" {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" fill="%s">%s</text>`+"\n", x+6, y-6, color, svgEscape(s.Labels[j]))
			}
		}
		// Legend, below the x label.
		ly := float64(height+legendGap) + float64(i*legendRow)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x0, ly-4, x0+24, ly-4, color, dash)
		fmt.Fprintf(b, `<text class="legend" x="%.1f" y="%.1f">%s</text>`+"\n", x0+30, ly, svgEscape(s.Name))
	}
	return nil
}

func plotFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// ranges are the axes' extents, padded so that points do not sit on the
// frame.
func (p *Plot) ranges() (xlo, xhi, ylo, yhi float64, err error) {
	xlo, ylo = math.Inf(1), math.Inf(1)
	xhi, yhi = math.Inf(-1), math.Inf(-1)
	for _, s := range p.Series {
		if len(s.X) != len(s.Y) {
			return 0, 0, 0, 0, fmt.Errorf("series %q: %d x values, %d y values", s.Name, len(s.X), len(s.Y))
		}
		for j := range s.X {
			if !plotFinite(s.Y[j]) {
				continue
			}
			xlo, xhi = min(xlo, s.X[j]), max(xhi, s.X[j])
			for _, v := range []float64{s.Y[j], valueAt(s.Lo, j), valueAt(s.Hi, j)} {
				if plotFinite(v) {
					if p.LogY && v <= 0 {
						return 0, 0, 0, 0, fmt.Errorf("series %q: %g on a log axis", s.Name, v)
					}
					ylo, yhi = min(ylo, v), max(yhi, v)
				}
			}
		}
	}
	if math.IsInf(xlo, 1) {
		return 0, 0, 0, 0, fmt.Errorf("no finite points")
	}
	if p.YFromZero && !p.LogY {
		ylo = min(ylo, 0)
	}
	xpad := 0.05 * (xhi - xlo)
	if p.IntegerX || xpad == 0 {
		xpad = max(xpad, 0.3)
	}
	xlo, xhi = xlo-xpad, xhi+xpad
	if p.LogY {
		l, h := math.Log10(ylo), math.Log10(yhi)
		pad := max(0.06*(h-l), 0.02)
		return xlo, xhi, math.Pow(10, l-pad), math.Pow(10, h+pad), nil
	}
	pad := 0.06 * (yhi - ylo)
	if pad == 0 {
		pad = max(math.Abs(yhi)*0.1, 1)
	}
	if ylo != 0 || !p.YFromZero {
		ylo -= pad
	}
	return xlo, xhi, ylo, yhi + pad, nil
}

func valueAt(s []float64, i int) float64 {
	if i < len(s) {
		return s[i]
	}
	return math.NaN()
}

type plotTick struct {
	v     float64
	label string
}

func (p *Plot) xTicks(lo, hi float64) []plotTick {
	if p.IntegerX && hi-lo <= 24 {
		var ts []plotTick
		for v := math.Ceil(lo); v <= hi; v++ {
			ts = append(ts, plotTick{v, strconv.Itoa(int(v))})
		}
		return ts
	}
	return linearTicks(lo, hi, 6)
}

func (p *Plot) yTicks(lo, hi float64) []plotTick {
	if p.LogY {
		return logTicks(lo, hi)
	}
	return linearTicks(lo, hi, 6)
}

// linearTicks are about n ticks at 1, 2, 2.5 or 5 × 10^k steps.
func linearTicks(lo, hi float64, n int) []plotTick {
	raw := (hi - lo) / float64(n)
	if raw <= 0 || !plotFinite(raw) {
		return []plotTick{{lo, formatTick(lo)}}
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ts []plotTick
	for i := math.Ceil(lo / step); i*step <= hi+step*1e-9; i++ {
		v := i * step
		if math.Abs(v) < step*1e-9 {
			v = 0
		}
		ts = append(ts, plotTick{v, formatTick(v)})
	}
	return ts
}

// logTicks are the sparsest of 10^k, {1,2,5}×10^k, {1…9}×10^k that puts
// at least three ticks in range; a range too narrow for that gets linear
// ticks (still placed on the log axis).
func logTicks(lo, hi float64) []plotTick {
	for _, ms := range [][]float64{{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}} {
		var ts []plotTick
		for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
			for _, m := range ms {
				v := m * math.Pow(10, e)
				if v >= lo && v <= hi {
					label := formatTick(v)
					if v >= 1e4 { // 1e4 1e5 1e6, not 10000 1e5 1e6
						label = expTick(v)
					}
					ts = append(ts, plotTick{v, label})
				}
			}
		}
		if len(ts) >= 3 {
			return ts
		}
	}
	return linearTicks(lo, hi, 5)
}

// formatTick prints a tick value without float noise (0.30000000000000004),
// and large or tiny ones as 2e5 rather than 2e+05.
func formatTick(v float64) string {
	if a := math.Abs(v); a != 0 && (a >= 1e5 || a < 1e-3) {
		return expTick(v)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// expTick prints v as 2e5 or 9.35e5 (3 significant digits).
func expTick(v float64) string {
	e := int(math.Floor(math.Log10(math.Abs(v))))
	m := strconv.FormatFloat(v/math.Pow(10, float64(e)), 'g', 3, 64)
	return m + "e" + strconv.Itoa(e)
}

func svgEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// QualityPlot draws perplexity against blocks removed, each point labelled
// with the blocks removed (a strategy's choice for k need not contain its
// choice for k−1). The axis is logarithmic when perplexity spans more than
// a factor of 3, as it does once pruning starts to hurt.
func (r *Report) QualityPlot() *Plot {
	s := Series{Name: fmt.Sprintf("%s (%s)", r.Quality.Metric, r.Strategy)}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range r.Points {
		s.X = append(s.X, float64(p.Removed))
		s.Y = append(s.Y, p.Perplexity)
		label := ""
		if p.Removed > 0 {
			label = blockList(p.RemovedBlocks)
		}
		s.Labels = append(s.Labels, label)
		if plotFinite(p.Perplexity) && p.Perplexity > 0 {
			lo, hi = min(lo, p.Perplexity), max(hi, p.Perplexity)
		}
	}
	return &Plot{Title: r.Quality.Metric + " vs blocks removed (labels: blocks removed)", XLabel: "blocks removed",
		YLabel: r.Quality.Metric + " (lower is better)", LogY: hi/lo > 3, IntegerX: true, Series: []Series{s}}
}

// SpeedPlots draws decode tokens/s, prefill latency and the speedup over
// the unpruned model against blocks removed, with min–max bars over runs
// and the ideal L/(L−k) dashed. It returns nil when the report has no
// speed measurements.
func (r *Report) SpeedPlots() []*Plot {
	base := r.base()
	if r.Bench == nil || base == nil || base.Bench == nil {
		return nil
	}
	L := float64(r.Blocks)
	dec := Series{Name: "measured (median, min–max)"}
	decIdeal := Series{Name: "ideal: unpruned × L/(L−k)", Dashed: true, Color: "#888"}
	pre := Series{Name: "measured (median, min–max)"}
	preIdeal := Series{Name: "ideal: unpruned × (L−k)/L", Dashed: true, Color: "#888"}
	sDec := Series{Name: "decode (run pairs: min–max)"}
	sPre := Series{Name: "prefill (run pairs: min–max)"}
	sIdeal := Series{Name: "ideal L/(L−k)", Dashed: true, Color: "#888"}
	for _, p := range r.Points {
		if p.Bench == nil {
			continue
		}
		k, bt := float64(p.Removed), p.Bench
		ideal := L / (L - k)
		dec.X, dec.Y = append(dec.X, k), append(dec.Y, bt.DecodeTokensPerS.Median)
		dec.Lo, dec.Hi = append(dec.Lo, bt.DecodeTokensPerS.Min), append(dec.Hi, bt.DecodeTokensPerS.Max)
		decIdeal.X, decIdeal.Y = append(decIdeal.X, k), append(decIdeal.Y, base.Bench.DecodeTokensPerS.Median*ideal)
		pre.X, pre.Y = append(pre.X, k), append(pre.Y, bt.PrefillMS.Median)
		pre.Lo, pre.Hi = append(pre.Lo, bt.PrefillMS.Min), append(pre.Hi, bt.PrefillMS.Max)
		preIdeal.X, preIdeal.Y = append(preIdeal.X, k), append(preIdeal.Y, base.Bench.PrefillMS.Median/ideal)
		sIdeal.X, sIdeal.Y = append(sIdeal.X, k), append(sIdeal.Y, ideal)
		d, pf := Stat{Median: 1, Min: 1, Max: 1}, Stat{Median: 1, Min: 1, Max: 1}
		if c := p.VsBase; c != nil {
			d, pf = c.DecodeSpeedupPairs, c.PrefillSpeedupPairs
			d.Median, pf.Median = c.DecodeSpeedup, c.PrefillSpeedup
		}
		sDec.X, sDec.Y = append(sDec.X, k), append(sDec.Y, d.Median)
		sDec.Lo, sDec.Hi = append(sDec.Lo, d.Min), append(sDec.Hi, d.Max)
		sPre.X, sPre.Y = append(sPre.X, k), append(sPre.Y, pf.Median)
		sPre.Lo, sPre.Hi = append(sPre.Lo, pf.Min), append(sPre.Hi, pf.Max)
	}
	s := r.Bench
	return []*Plot{
		{Title: fmt.Sprintf("decode, batch 1 (%d tokens)", s.DecodeTokens), XLabel: "blocks removed", YLabel: "tokens/s (higher is better)",
			YFromZero: true, IntegerX: true, Series: []Series{dec, decIdeal}},
		{Title: fmt.Sprintf("prefill, %d tokens", s.PromptLen), XLabel: "blocks removed", YLabel: "latency ms (lower is better)",
			YFromZero: true, IntegerX: true, Series: []Series{pre, preIdeal}},
		{Title: "speedup over the unpruned model", XLabel: "blocks removed", YLabel: "× (interleaved runs)",
			IntegerX: true, Series: []Series{sDec, sPre, sIdeal}},
	}
}
