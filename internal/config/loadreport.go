package config

import "github.com/sluice-lb/sluice/internal/balance"

// loadReport checks a pool's load_report (nil: none).
func (v *validator) loadReport(p string, pl *Pool) {
	lr := pl.LoadReport
	if lr == nil {
		return
	}
	p += ".load_report"
	if lr.Header != "" {
		if !isToken(lr.Header) {
			v.errorf(p+".header", "load_report.header %q is not a valid header name", lr.Header)
		}
		if spec, ok := balance.Lookup(pl.Balance); ok && !spec.Load {
			v.errorf(p+".header", `load_report.header has no effect with balance %q, which does not weigh load: set balance to %s, or header: "" to read only the agent`,
				pl.Balance, orList(balance.Names(func(s balance.Spec) bool { return s.Load })))
		}
	}
	v.inRange(p+".agent_port", lr.AgentPort, 0, 65535, "no agent")
	if lr.AgentPort > 0 && pl.HealthCheck == nil {
		v.errorf(p+".agent_port", "load_report.agent_port needs a health_check: the agent is asked at its interval; add health_check (type tcp checks only the port)")
	}
	if lr.Header == "" && lr.AgentPort == 0 {
		v.errorf(p, `load_report reads nothing: set header (e.g. endpoint-load-metrics) or agent_port, or remove the block`)
	}
}
