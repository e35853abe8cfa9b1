// Command chart draws the benchmark bar chart (PNG) from a small TSV written
// by bench/run.sh. Each input line is
//
//	PANEL<TAB>TARGET<TAB>VALUE
//
// Lines starting with '#' are ignored. Panels are drawn top to bottom in the
// order they first appear; each panel is one horizontal bar per target,
// scaled to the largest value in that panel, with the value written at the
// end of the bar.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

type bar struct {
	target string
	value  float64
}

type panel struct {
	title string
	bars  []bar
}

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // blue
	{0x2c, 0xa0, 0x2c, 0xff}, // green
	{0xd6, 0x27, 0x28, 0xff}, // red
	{0x94, 0x67, 0xbd, 0xff},
	{0xff, 0x7f, 0x0e, 0xff},
}

func main() {
	in := flag.String("in", "", "input TSV (PANEL, TARGET, VALUE)")
	out := flag.String("out", "docs/benchmarks.png", "output PNG")
	title := flag.String("title", "sluice benchmark", "chart title")
	flag.Parse()
	if *in == "" {
		fmt.Fprintln(os.Stderr, "chart: -in is required")
		os.Exit(2)
	}
	panels, err := read(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
	if len(panels) == 0 {
		fmt.Fprintln(os.Stderr, "chart: no data in", *in)
		os.Exit(1)
	}
	img := render(*title, panels)
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func read(path string) ([]panel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var panels []panel
	idx := map[string]int{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		fs := strings.Split(t, "\t")
		if len(fs) != 3 {
			return nil, fmt.Errorf("%s:%d: want 3 tab-separated fields", path, line)
		}
		v, err := strconv.ParseFloat(fs[2], 64)
		if err != nil {
			continue // "-" or NA: no bar
		}
		i, ok := idx[fs[0]]
		if !ok {
			i = len(panels)
			idx[fs[0]] = i
			panels = append(panels, panel{title: fs[0]})
		}
		panels[i].bars = append(panels[i].bars, bar{fs[1], v})
	}
	return panels, sc.Err()
}

const (
	width    = 900
	margin   = 16
	labelW   = 90
	barH     = 18
	barGap   = 6
	titleH   = 22
	panelGap = 14
	valueW   = 80
)

func render(title string, panels []panel) *image.RGBA {
	h := margin + titleH + panelGap
	for _, p := range panels {
		h += titleH + len(p.bars)*(barH+barGap) + panelGap
	}
	h += margin
	img := image.NewRGBA(image.Rect(0, 0, width, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	black := color.RGBA{0, 0, 0, 0xff}
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}

	colors := map[string]color.RGBA{}
	y := margin
	text(img, margin, y+13, title, black)
	y += titleH + panelGap
	for _, p := range panels {
		text(img, margin, y+13, p.title, black)
		y += titleH
		maxV := 0.0
		for _, b := range p.bars {
			maxV = max(maxV, b.value)
		}
		x0 := margin + labelW
		span := width - x0 - margin - valueW
		fill(img, image.Rect(x0-1, y-2, x0, y+len(p.bars)*(barH+barGap)), grey)
		for _, b := range p.bars {
			c, ok := colors[b.target]
			if !ok {
				c = palette[len(colors)%len(palette)]
				colors[b.target] = c
			}
			text(img, margin, y+13, b.target, black)
			w := 0
			if maxV > 0 {
				w = int(float64(span) * b.value / maxV)
			}
			fill(img, image.Rect(x0, y, x0+max(w, 1), y+barH), c)
			text(img, x0+w+6, y+13, format(b.value), black)
			y += barH + barGap
		}
		y += panelGap
	}
	return img
}

func format(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{
		Dst:  img,
		Src:  image.NewUniform(c),
		Face: basicfont.Face7x13,
		Dot:  fixed.P(x, y),
	}
	d.DrawString(s)
}
