package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// The gRPC health checking protocol (grpc.health.v1), spoken by hand: a
// unary Health/Check call whose request and response are one-field
// protobuf messages.
//
//	message HealthCheckRequest  { string service = 1; }
//	message HealthCheckResponse { ServingStatus status = 1; }
//	enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
const grpcCheckPath = "/grpc.health.v1.Health/Check"

// servingStatus names HealthCheckResponse.status values.
var servingStatus = [...]string{"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"}

const serving = 1

// grpcCodes names gRPC status codes.
var grpcCodes = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

const (
	codeNotFound      = 5
	codeUnimplemented = 12
)

// probeGRPC calls grpc.health.v1.Health/Check for the configured service
// and passes on grpc-status 0 with status SERVING.
func (p *h2Prober) probeGRPC(ctx context.Context, b *pool.Backend) error {
	body := grpcFrame(healthCheckRequest(p.hc.Service))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme(b)+"://"+b.Host+grpcCheckPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if p.hc.Host != "" {
		req.Host = p.hc.Host
	}
	req.ContentLength = int64(len(body))
	req.Header = http.Header{
		"Content-Type": {"application/grpc"},
		"Te":           {"trailers"},
		"User-Agent":   {"sluice-health-check"},
	}
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set("Grpc-Timeout", grpcTimeout(time.Until(dl)))
	}
	resp, data, err := p.roundTrip(ctx, b, req)
	if err != nil {
		return fmt.Errorf("grpc health check: %w", err)
	}
	if len(data) > maxResponse {
		return fmt.Errorf("grpc health check: response larger than %d KiB", maxResponse>>10)
	}
	if err := grpcVerdict(p.hc.Service, resp, data); err != nil {
		return fmt.Errorf("grpc health check: %w", err)
	}
	return nil
}

// healthCheckRequest encodes HealthCheckRequest{service}: field 1, wire
// type 2 (tag 0x0a), a varint length, the bytes. The empty string, proto3's
// default, is not written.
func healthCheckRequest(service string) []byte {
	if service == "" {
		return nil
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(service))
	b = append(b, 0x0a)
	b = binary.AppendUvarint(b, uint64(len(service)))
	return append(b, service...)
}

// grpcFrame prefixes msg as one uncompressed gRPC message: a 0 flag byte
// and its length as a big-endian uint32.
func grpcFrame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// grpcTimeout formats d as a grpc-timeout value in milliseconds (at most
// 8 digits, as the protocol allows).
func grpcTimeout(d time.Duration) string {
	return strconv.FormatInt(min(max(d.Milliseconds(), 1), 99999999), 10) + "m"
}

// grpcVerdict judges a Health/Check response whose body is data.
func grpcVerdict(service string, resp *http.Response, data []byte) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP status %d, not a gRPC answer", resp.StatusCode)
	}
	// grpc-status comes in the trailers, or in the headers of a
	// trailers-only response (an error without a message).
	status, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if status == "" {
		status, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	if status == "" {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
			return fmt.Errorf("content-type %q and no grpc-status: not a gRPC server", ct)
		}
		return errors.New("no grpc-status in the response")
	}
	code, err := strconv.Atoi(status)
	if err != nil || code < 0 {
		return fmt.Errorf("malformed grpc-status %q", status)
	}
	if code != 0 {
		return grpcStatusError(service, code, grpcMessage(msg))
	}
	m, err := grpcMessageBody(data)
	if err != nil {
		return err
	}
	st, err := healthCheckStatus(m)
	if err != nil {
		return err
	}
	if st != serving {
		name := fmt.Sprintf("status %d", st)
		if st < uint64(len(servingStatus)) {
			name = servingStatus[st]
		}
		return fmt.Errorf("%s is %s, not SERVING", what(service), name)
	}
	return nil
}

// what names the service a check asks about.
func what(service string) string {
	if service == "" {
		return `the backend (service "")`
	}
	return fmt.Sprintf("service %q", service)
}

func grpcStatusError(service string, code int, msg string) error {
	name := "code " + strconv.Itoa(code)
	if code < len(grpcCodes) {
		name = grpcCodes[code]
	}
	detail := fmt.Sprintf("grpc-status %d %s", code, name)
	if msg != "" {
		detail += fmt.Sprintf(", grpc-message %q", msg)
	}
	switch code {
	case codeNotFound: // Check's answer for a service the server does not know
		return fmt.Errorf("SERVICE_UNKNOWN: %s is unknown to the backend (%s)", what(service), detail)
	case codeUnimplemented:
		return fmt.Errorf("the backend does not implement grpc.health.v1.Health (%s)", detail)
	}
	return errors.New(detail)
}

// grpcMessage decodes a grpc-message value (percent-encoded), cut to a
// length fit for a log line.
func grpcMessage(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		s = d
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// grpcMessageBody returns the one message of a unary response body.
func grpcMessageBody(data []byte) ([]byte, error) {
	switch {
	case len(data) == 0:
		return nil, errors.New("grpc-status 0 but no response message")
	case len(data) < 5:
		return nil, errors.New("truncated gRPC message")
	case data[0] == 1:
		return nil, errors.New("compressed response message, though none was asked for")
	case data[0] != 0:
		return nil, fmt.Errorf("malformed gRPC message (flags %#x)", data[0])
	}
	n := binary.BigEndian.Uint32(data[1:5])
	rest := data[5:]
	switch {
	case uint64(n) > uint64(len(rest)):
		return nil, errors.New("truncated gRPC message")
	case uint64(n) < uint64(len(rest)):
		return nil, errors.New("more than one response message to a unary call")
	}
	return rest, nil
}

var errMalformed = errors.New("malformed HealthCheckResponse")

// healthCheckStatus decodes HealthCheckResponse.status (field 1, varint)
// from m, skipping fields it does not know; absent, it is 0 (UNKNOWN).
func healthCheckStatus(m []byte) (uint64, error) {
	var status uint64
	for len(m) > 0 {
		key, n := binary.Uvarint(m)
		if n <= 0 || key>>3 == 0 {
			return 0, errMalformed
		}
		m = m[n:]
		switch key & 7 {
		case 0: // varint
			v, n := binary.Uvarint(m)
			if n <= 0 {
				return 0, errMalformed
			}
			m = m[n:]
			if key>>3 == 1 {
				status = v
			}
		case 1: // 64-bit
			if len(m) < 8 {
				return 0, errMalformed
			}
			m = m[8:]
		case 2: // length-delimited
			l, n := binary.Uvarint(m)
			if n <= 0 || l > uint64(len(m)-n) {
				return 0, errMalformed
			}
			m = m[n+int(l):]
		case 5: // 32-bit
			if len(m) < 4 {
				return 0, errMalformed
			}
			m = m[4:]
		default:
			return 0, errMalformed
		}
	}
	return status, nil
}
