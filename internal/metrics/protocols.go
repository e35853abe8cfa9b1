package metrics

import "github.com/prometheus/client_golang/prometheus"

// Protocols is what a listener reports about its HTTP/3 (QUIC) side and
// its automatic certificates.
type Protocols struct {
	// QUIC: the listener serves HTTP/3. QUICHandshakes are in progress now;
	// QUICRetries counts the Retry packets asked for under load.
	QUIC           bool
	QUICHandshakes int64
	QUICRetries    uint64
	// ACME: the listener has tls.acme; certificates obtained, and attempts
	// that failed.
	ACME                     bool
	ACMEObtained, ACMEFailed uint64
}

var (
	descQUICHandshakes = prometheus.NewDesc("sluice_quic_handshakes_in_progress",
		"QUIC handshakes under way on an HTTP/3 listener.", []string{"listener"}, nil)
	descQUICRetries = prometheus.NewDesc("sluice_quic_retries_total",
		"QUIC connection attempts asked to prove their address with a Retry because too many handshakes were in progress.",
		[]string{"listener"}, nil)
	descACMEObtained = prometheus.NewDesc("sluice_acme_certificates_obtained_total",
		"Certificates obtained from the ACME CA (tls.acme), first ones and renewals.", []string{"listener"}, nil)
	descACMEFailed = prometheus.NewDesc("sluice_acme_errors_total",
		"Attempts to obtain a certificate from the ACME CA that failed (the certificate in hand keeps serving).",
		[]string{"listener"}, nil)
	protocolDescs = []*prometheus.Desc{descQUICHandshakes, descQUICRetries, descACMEObtained, descACMEFailed}
)

// collectProtocols sends what p reports for listener name.
func collectProtocols(name string, p Protocols, counter func(*prometheus.Desc, uint64, ...string), gauge func(*prometheus.Desc, float64, ...string)) {
	if p.QUIC {
		gauge(descQUICHandshakes, float64(p.QUICHandshakes), name)
		counter(descQUICRetries, p.QUICRetries, name)
	}
	if p.ACME {
		counter(descACMEObtained, p.ACMEObtained, name)
		counter(descACMEFailed, p.ACMEFailed, name)
	}
}
