package proxy

import (
	"net/http"
	"time"

	"github.com/sluice-lb/sluice/internal/loadreport"
	"github.com/sluice-lb/sluice/internal/pool"
)

// ObserveLoad records on b the load it reported in value, the value of its
// response's load field (Target.LoadHeader), when value is an ORCA report
// sluice reads.
func ObserveLoad(b *pool.Backend, value string) {
	if u, ok := loadreport.ORCA(value); ok {
		b.ReportLoad(u, time.Now())
	}
}

// TakeLoadHeader records the load b reported in the response fields h and
// removes the field: it is meant for sluice, not for the client. Codecs
// that relay raw fields do the same with ObserveLoad.
func (t *Target) TakeLoadHeader(b *pool.Backend, h http.Header) {
	if t.LoadHeader == "" {
		return
	}
	if vv, ok := h[t.LoadHeader]; ok {
		if len(vv) > 0 {
			ObserveLoad(b, vv[0])
		}
		delete(h, t.LoadHeader)
	}
}
