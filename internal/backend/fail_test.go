package backend

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFailuresReachTheBackendOnce(t *testing.T) {
	tests := []struct {
		path      string
		wantStats func(Stats) (got, want int64)
	}{
		{"/reset", func(s Stats) (int64, int64) { return s.Resets, 1 }},
		{"/drop", func(s Stats) (int64, int64) { return s.Drops, 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			b := startBackend(t, "b1")
			req, _ := http.NewRequestWithContext(testContext(t), "POST", b.url+tt.path, strings.NewReader(strings.Repeat("x", 100_000)))
			resp, err := b.client.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("POST %s: got %d, want an error", tt.path, resp.StatusCode)
			}
			st := b.Stats()
			if got, want := tt.wantStats(st); got != want {
				t.Errorf("counter: got %d, want %d", got, want)
			}
			if diff := cmp.Diff(map[string]int64{tt.path: 1}, st.Paths); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			// The backend still serves afterwards.
			if resp, _ := b.get(t, "/health"); resp.StatusCode != 200 {
				t.Errorf("GET /health afterwards: got %d, want 200", resp.StatusCode)
			}
		})
	}
}
