package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// notBuiltYet are contract metrics whose feature has not landed; each
// names the feature. Delete a line when it lands: the test fails while a
// listed metric is described, so the list cannot go stale.
var notBuiltYet = map[string]string{}

// TestContractMetrics checks every metric the contract (docs/contract.md,
// "Metrics (at least)") names is described by the collector, with the
// labels the contract gives it.
func TestContractMetrics(t *testing.T) {
	doc, err := os.ReadFile("../../docs/contract.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i := strings.Index(text, "Metrics (at least):")
	if i < 0 {
		t.Fatal(`docs/contract.md has no "Metrics (at least):" paragraph`)
	}
	para := text[i:]
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	want := map[string][]string{} // name → labels ("" list: none given)
	for _, m := range regexp.MustCompile("`(sluice_[a-z_]+)(?:\\{([a-z_,]+)\\})?`").FindAllStringSubmatch(para, -1) {
		var labels []string
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
		}
		want[m[1]] = labels
	}
	// The histogram's labels are given apart: (histogram; `pool`,`backend`).
	want["sluice_request_duration_seconds"] = []string{"pool", "backend"}
	if len(want) < 15 {
		t.Fatalf("found only %d metric names in the contract's paragraph: %v", len(want), want)
	}

	ch := make(chan *prometheus.Desc, 100)
	(&Collector{}).Describe(ch)
	close(ch)
	got := map[string][]string{}
	descRE := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		var labels []string
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
		}
		got[m[1]] = labels
	}
	for name, labels := range want {
		gotLabels, ok := got[name]
		if feature, later := notBuiltYet[name]; later {
			if ok {
				t.Errorf("%s is described now: delete it from notBuiltYet (%s)", name, feature)
			}
			continue
		}
		if !ok {
			t.Errorf("the contract's metric %s is not described by the collector", name)
			continue
		}
		slices.Sort(labels)
		slices.Sort(gotLabels)
		if !slices.Equal(labels, gotLabels) {
			t.Errorf("%s has labels %v, the contract says %v", name, gotLabels, labels)
		}
	}
}
