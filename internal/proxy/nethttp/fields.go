package nethttp

import (
	"net/http"

	"github.com/sluice-lb/sluice/internal/proxy"
)

var _ proxy.Fields = stdFields(nil)

// stdFields is http.Header as proxy.Fields.
type stdFields http.Header

func (h stdFields) Get(name string) string { return http.Header(h).Get(name) }

func (h stdFields) Value(name string, i int) (string, bool) {
	if v := h[name]; i < len(v) {
		return v[i], true
	}
	return "", false
}
