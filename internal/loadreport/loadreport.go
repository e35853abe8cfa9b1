// Package loadreport reads what backends say about their own load: an ORCA
// report (Open Request Cost Aggregation, as Envoy and gRPC read it) in a
// response field, and the line an HAProxy-style agent answers on its port.
// Both parsers are strict about what they take and ignore what they do not
// know, as the protocols ask: a backend newer than sluice is not an error.
package loadreport

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// ORCA returns the utilisation in an endpoint-load-metrics value: its
// application_utilization when above 0, else its cpu_utilization, as
// Envoy's client-side weighted round robin takes them. The TEXT form is
// "TEXT cpu_utilization=0.8, mem_utilization=0.5, ..."; the JSON form
// "JSON {"cpu_utilization": 0.8, ...}". ok is false when the value holds
// neither utilisation in a form sluice reads (the binary form included).
func ORCA(v string) (util float64, ok bool) {
	v = strings.TrimSpace(v)
	format, body, _ := strings.Cut(v, " ")
	var cpu, app float64 = -1, -1
	switch format {
	case "TEXT":
		for body != "" {
			var pair string
			pair, body, _ = strings.Cut(body, ",")
			k, val, found := strings.Cut(strings.TrimSpace(pair), "=")
			if !found {
				continue
			}
			switch strings.TrimSpace(k) {
			case "cpu_utilization":
				cpu = number(val)
			case "application_utilization":
				app = number(val)
			}
		}
	case "JSON":
		var m struct {
			CPU *float64 `json:"cpu_utilization"`
			App *float64 `json:"application_utilization"`
		}
		if json.Unmarshal([]byte(body), &m) != nil {
			return 0, false
		}
		if m.CPU != nil && valid(*m.CPU) {
			cpu = *m.CPU
		}
		if m.App != nil && valid(*m.App) {
			app = *m.App
		}
	default:
		return 0, false
	}
	switch {
	case app > 0:
		return app, true
	case cpu >= 0:
		return cpu, true
	}
	return 0, false
}

// number parses a utilisation, -1 when it is not a finite number ≥ 0.
func number(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !valid(f) {
		return -1
	}
	return f
}

func valid(f float64) bool { return f >= 0 && !math.IsInf(f, 0) && !math.IsNaN(f) }

// Health is what an agent says about a backend's health.
type Health uint8

const (
	HealthUnsaid Health = iota
	HealthUp            // up
	HealthDown          // down, fail or stopped
)

// Admin is what an agent asks of a backend's operational state.
type Admin uint8

const (
	AdminUnsaid Admin = iota
	AdminReady        // ready: take traffic again
	AdminDrain        // drain: no new requests
	AdminMaint        // maint: nothing at all
)

// Agent is one answer of an agent.
type Agent struct {
	Health Health
	Admin  Admin
	// Weight is the percentage of its configured weight the backend asks
	// for ("75%"), or -1 when the answer has none.
	Weight int
	// Util is the utilisation given as cpu_utilization= or
	// application_utilization= (a sluice extension, as in ORCA), or -1.
	Util float64
	// Desc is what follows '#', trimmed.
	Desc string
}

// MaxAgentLine is the most of an agent's answer that is read.
const MaxAgentLine = 1024

// ParseAgent reads an agent's answer as HAProxy's agent-check does: words
// separated by spaces, tabs or commas, in any order, up to the end of the
// line; '#' starts a description to the end. Words it does not know
// (maxconn:N among them) are ignored. When words disagree the last wins.
func ParseAgent(line string) Agent {
	a := Agent{Weight: -1, Util: -1}
	line, _, _ = strings.Cut(line, "\n")
	line = strings.TrimRight(line, "\r")
	if i := strings.IndexByte(line, '#'); i >= 0 {
		a.Desc = strings.TrimSpace(line[i+1:])
		line = line[:i]
	}
	for _, w := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' }) {
		switch lw := strings.ToLower(w); lw {
		case "up":
			a.Health = HealthUp
		case "down", "fail", "failed", "stopped":
			a.Health = HealthDown
		case "ready":
			a.Admin = AdminReady
		case "drain":
			a.Admin = AdminDrain
		case "maint":
			a.Admin = AdminMaint
		default:
			if pct, ok := strings.CutSuffix(lw, "%"); ok {
				if n, err := strconv.Atoi(pct); err == nil && n >= 0 && n <= 100_000 {
					a.Weight = n
				}
				continue
			}
			if k, v, ok := strings.Cut(lw, "="); ok && (k == "cpu_utilization" || k == "application_utilization") {
				if f := number(v); f >= 0 && (k == "application_utilization" || a.Util < 0) {
					a.Util = f
				}
			}
		}
	}
	return a
}
