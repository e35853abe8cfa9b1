package loadreport

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestORCA(t *testing.T) {
	tests := []struct {
		in   string
		util float64
		ok   bool
	}{
		{"TEXT cpu_utilization=0.8", 0.8, true},
		{"TEXT cpu_utilization=0.3, mem_utilization=0.8, rps_fractional=10, named_metrics.x=1", 0.3, true},
		{"TEXT cpu_utilization=0.3,application_utilization=0.6", 0.6, true},
		{"TEXT application_utilization=0, cpu_utilization=0.25", 0.25, true},
		{"TEXT  cpu_utilization = 1.5 ", 1.5, true},
		{"TEXT mem_utilization=0.5", 0, false},
		{"TEXT cpu_utilization=-1", 0, false},
		{"TEXT cpu_utilization=NaN", 0, false},
		{"TEXT cpu_utilization=Inf", 0, false},
		{"TEXT cpu_utilization", 0, false},
		{`JSON {"cpu_utilization": 0.9, "mem_utilization": 0.1}`, 0.9, true},
		{`JSON {"cpu_utilization": 0.9, "application_utilization": 0.4}`, 0.4, true},
		{`JSON {"cpu_utilization": "high"}`, 0, false},
		{"BIN CgQIARAB", 0, false},
		{"cpu_utilization=0.8", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		util, ok := ORCA(tt.in)
		if util != tt.util || ok != tt.ok {
			t.Errorf("ORCA(%q) = %v, %v, want %v, %v", tt.in, util, ok, tt.util, tt.ok)
		}
	}
}

func TestParseAgent(t *testing.T) {
	tests := []struct {
		in   string
		want Agent
	}{
		{"up\n", Agent{Health: HealthUp, Weight: -1, Util: -1}},
		{"75%\n", Agent{Weight: 75, Util: -1}},
		{"drain", Agent{Admin: AdminDrain, Weight: -1, Util: -1}},
		{"up, ready 50%\r\n", Agent{Health: HealthUp, Admin: AdminReady, Weight: 50, Util: -1}},
		{"MAINT\n", Agent{Admin: AdminMaint, Weight: -1, Util: -1}},
		{"down#disk full\n", Agent{Health: HealthDown, Weight: -1, Util: -1, Desc: "disk full"}},
		{"stopped # going away", Agent{Health: HealthDown, Weight: -1, Util: -1, Desc: "going away"}},
		{"fail\tmaxconn:30", Agent{Health: HealthDown, Weight: -1, Util: -1}},
		{"ready drain", Agent{Admin: AdminDrain, Weight: -1, Util: -1}},
		{"0%", Agent{Weight: 0, Util: -1}},
		{"-5% 12x% %", Agent{Weight: -1, Util: -1}},
		{"up cpu_utilization=0.7", Agent{Health: HealthUp, Weight: -1, Util: 0.7}},
		{"application_utilization=0.2,cpu_utilization=0.9", Agent{Weight: -1, Util: 0.2}},
		{"up\ndown\n", Agent{Health: HealthUp, Weight: -1, Util: -1}},
		{"", Agent{Weight: -1, Util: -1}},
		{"hello world", Agent{Weight: -1, Util: -1}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ParseAgent(tt.in)); diff != "" {
			t.Errorf("ParseAgent(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzORCA(f *testing.F) {
	for _, s := range []string{"TEXT cpu_utilization=0.8, mem_utilization=0.1", `JSON {"cpu_utilization": 1}`, "BIN x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		util, ok := ORCA(s)
		if ok && (util < 0 || math.IsNaN(util) || math.IsInf(util, 0)) {
			t.Errorf("ORCA(%q) = %v, true: want a finite utilisation ≥ 0", s, util)
		}
		if !ok && util != 0 {
			t.Errorf("ORCA(%q) = %v, false: want 0", s, util)
		}
	})
}

func FuzzParseAgent(f *testing.F) {
	for _, s := range []string{"up 75%\n", "down#x", "drain,maint ready", "cpu_utilization=0.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a := ParseAgent(s)
		if a.Weight < -1 || a.Weight > 100_000 {
			t.Errorf("ParseAgent(%q).Weight = %d, want -1 or 0..100000", s, a.Weight)
		}
		if a.Util != -1 && (a.Util < 0 || math.IsNaN(a.Util) || math.IsInf(a.Util, 0)) {
			t.Errorf("ParseAgent(%q).Util = %v, want -1 or a finite value ≥ 0", s, a.Util)
		}
		if a.Health > HealthDown || a.Admin > AdminMaint {
			t.Errorf("ParseAgent(%q) = %+v: state out of range", s, a)
		}
	})
}
