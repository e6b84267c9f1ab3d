package eval

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// svgSummary parses an SVG and counts what a reader of the plot sees.
type svgSummary struct {
	polylines  []string // points attributes of the series
	points     int      // circles
	ranges     int      // min–max bars
	texts      []string // every text element
	legend     []string
	width, hgt int
}

func parseSVG(t *testing.T, data []byte) svgSummary {
	t.Helper()
	var s svgSummary
	dec := xml.NewDecoder(bytes.NewReader(data))
	var inText, inLegend bool
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			attr := map[string]string{}
			for _, a := range e.Attr {
				attr[a.Name.Local] = a.Value
			}
			switch e.Name.Local {
			case "svg":
				s.width, _ = strconv.Atoi(attr["width"])
				s.hgt, _ = strconv.Atoi(attr["height"])
			case "polyline":
				s.polylines = append(s.polylines, attr["points"])
			case "circle":
				s.points++
			case "path":
				if attr["class"] == "range" {
					s.ranges++
				}
			case "text":
				inText, inLegend = true, attr["class"] == "legend"
			}
		case xml.CharData:
			if inText {
				s.texts = append(s.texts, string(e))
				if inLegend {
					s.legend = append(s.legend, string(e))
				}
			}
		case xml.EndElement:
			if e.Name.Local == "text" {
				inText, inLegend = false, false
			}
		}
	}
	return s
}

func TestQualityPlot(t *testing.T) {
	r := sampleReport()
	var b bytes.Buffer
	if err := WriteSVG(&b, "sweep", 640, 420, r.QualityPlot()); err != nil {
		t.Fatal(err)
	}
	s := parseSVG(t, b.Bytes())
	if len(s.polylines) != 1 || len(strings.Fields(s.polylines[0])) != 2 || s.points != 2 {
		t.Fatalf("want one line through 2 points, got %d lines %q, %d points", len(s.polylines), s.polylines, s.points)
	}
	all := strings.Join(s.texts, "|")
	// Perplexity 4 → 20: a factor of 5, drawn on a log axis with ticks
	// between; the pruned point is labelled with its blocks.
	for _, want := range []string{"perplexity (lower is better) (log scale)", "blocks removed", "9-14", "|5|", "|10|", "|20|"} {
		if !strings.Contains("|"+all+"|", want) {
			t.Errorf("plot text lacks %q: %s", want, all)
		}
	}
	// The higher perplexity is drawn higher (smaller y).
	p0, p1 := strings.Split(strings.Fields(s.polylines[0])[0], ","), strings.Split(strings.Fields(s.polylines[0])[1], ",")
	y0, _ := strconv.ParseFloat(p0[1], 64)
	y1, _ := strconv.ParseFloat(p1[1], 64)
	x0, _ := strconv.ParseFloat(p0[0], 64)
	x1, _ := strconv.ParseFloat(p1[0], 64)
	if !(y1 < y0 && x1 > x0) {
		t.Errorf("point (6 removed, ppl 20) at %v,%v is not up and right of (0, 4) at %v,%v", x1, y1, x0, y0)
	}
}

func TestSpeedPlots(t *testing.T) {
	r := sampleReport()
	panels := r.SpeedPlots()
	if len(panels) != 3 {
		t.Fatalf("%d speed panels, want 3", len(panels))
	}
	var b bytes.Buffer
	if err := WriteSVG(&b, "speed", 420, 400, panels...); err != nil {
		t.Fatal(err)
	}
	s := parseSVG(t, b.Bytes())
	// Decode and prefill: measured + ideal; speedup: decode, prefill, ideal.
	if len(s.polylines) != 7 {
		t.Fatalf("%d lines, want 7", len(s.polylines))
	}
	// Measured series have dots (the dashed ideals do not): 2+2+2+2 points;
	// min–max bars on every measured point with a range, except the
	// unpruned point's speedups (exactly 1).
	if s.points != 8 || s.ranges != 6 {
		t.Errorf("%d points, %d range bars; want 8 and 6", s.points, s.ranges)
	}
	if s.width != 3*420 {
		t.Errorf("width %d, want 3 panels of 420", s.width)
	}
	for _, want := range []string{"ideal L/(L−k)", "tokens/s (higher is better)", "latency ms (lower is better)", "speedup over the unpruned model"} {
		if !strings.Contains(strings.Join(s.texts, "|"), want) {
			t.Errorf("speed plot lacks %q", want)
		}
	}
	if r.Bench = nil; r.SpeedPlots() != nil {
		t.Error("speed panels without measurements")
	}
}

func TestPlotErrors(t *testing.T) {
	cases := []struct {
		name string
		p    Plot
	}{
		{"zero on a log axis", Plot{LogY: true, Series: []Series{{Name: "s", X: []float64{0, 1}, Y: []float64{0, 1}}}}},
		{"ragged", Plot{Series: []Series{{Name: "s", X: []float64{0, 1}, Y: []float64{1}}}}},
		{"no points", Plot{Series: []Series{{Name: "s"}}}},
	}
	for _, c := range cases {
		if err := WriteSVG(io.Discard, "x", 300, 200, &c.p); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func TestTicks(t *testing.T) {
	labels := func(ts []plotTick) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.label)
		}
		return strings.Join(s, " ")
	}
	cases := []struct {
		name, got, want string
	}{
		{"linear", labels(linearTicks(0, 10, 5)), "0 2 4 6 8 10"},
		{"linear 2.5", labels(linearTicks(0, 1.2, 6)), "0 0.2 0.4 0.6 0.8 1 1.2"},
		{"linear negative", labels(linearTicks(-3, 3, 6)), "-3 -2 -1 0 1 2 3"},
		{"log decades", labels(logTicks(3, 2e6)), "10 100 1000 1e4 1e5 1e6"},
		{"log 1-2-5", labels(logTicks(3, 60)), "5 10 20 50"},
		{"log narrow", labels(logTicks(3.9, 9.7)), "4 5 6 7 8 9"},
		{"integer x", labels((&Plot{IntegerX: true}).xTicks(-0.3, 4.3)), "0 1 2 3 4"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
}

// TestPlotRenders converts the plots to PNG with rsvg-convert, when it is
// installed, and checks the image is not blank: lines were drawn where the
// renderer could see them.
func TestPlotRenders(t *testing.T) {
	rsvg, err := exec.LookPath("rsvg-convert")
	if err != nil {
		t.Skip("rsvg-convert not installed")
	}
	r := sampleReport()
	dir := t.TempDir()
	for name, panels := range map[string][]*Plot{"quality": {r.QualityPlot()}, "speed": r.SpeedPlots()} {
		svg := filepath.Join(dir, name+".svg")
		var b bytes.Buffer
		if err := WriteSVG(&b, name, 420, 400, panels...); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(svg, b.Bytes(), 0o644)
		out := filepath.Join(dir, name+".png")
		if msg, err := exec.Command(rsvg, "-o", out, svg).CombinedOutput(); err != nil {
			t.Fatalf("rsvg-convert: %v: %s", err, msg)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		bounds := img.Bounds()
		colored := 0 // pixels of a series colour, not grey or white
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			for x := bounds.Min.X; x < bounds.Max.X; x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				if max(r, g, b)-min(r, g, b) > 0x3000 {
					colored++
				}
			}
		}
		if bounds.Dx() < 400 || colored < 200 {
			t.Errorf("%s.png: %v, %d coloured pixels", name, bounds, colored)
		}
	}
}
