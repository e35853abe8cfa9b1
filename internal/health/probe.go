package health

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

// newProber returns the HTTP or TCP prober hc asks for.
func newProber(hc *config.HealthCheck, utls config.UpstreamTLS) Prober {
	if hc.Type == "tcp" {
		return probeTCP
	}
	tr := &http.Transport{
		// A fresh connection per check, as HAProxy does: a check that reuses
		// a connection proves less about the backend's listener.
		DisableKeepAlives:  true,
		DisableCompression: true,
		TLSClientConfig:    utls.ClientConfig(),
		Proxy:              nil,
	}
	return func(ctx context.Context, b *pool.Backend) error {
		scheme := "http"
		if b.URL.Scheme == "https" {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+b.Host+hc.Path, nil)
		if err != nil {
			return err
		}
		if hc.Host != "" {
			req.Host = hc.Host
		}
		req.Header.Set("User-Agent", "sluice-health-check")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < hc.ExpectMin || resp.StatusCode > hc.ExpectMax {
			return fmt.Errorf("health check %s answered %d, want %s", hc.Path, resp.StatusCode, hc.ExpectStatus)
		}
		return nil
	}
}

func probeTCP(ctx context.Context, b *pool.Backend) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", b.Host)
	if err != nil {
		return err
	}
	return c.Close()
}
