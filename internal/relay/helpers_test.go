package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// logBuffer collects slog output from any goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// debugLogger returns a logger at debug level writing into a buffer.
func debugLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects with plaintext defaults suitable for loopback test servers;
// mutate adjusts the options.
func dial(t *testing.T, addr string, mutate func(*relay.Options)) (*relay.Client, error) {
	t.Helper()
	opts := relay.Options{
		Addr:       addr,
		TLS:        tlsmode.None,
		HeloDomain: "relay-test.example",
		Timeout:    5 * time.Second,
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := relay.Dial(testContext(t), opts)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDial(t *testing.T, addr string, mutate func(*relay.Options)) *relay.Client {
	t.Helper()
	c, err := dial(t, addr, mutate)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c
}

func withTLS(mode tlsmode.Mode, pool *tls.Config) func(*relay.Options) {
	return func(o *relay.Options) {
		o.TLS = mode
		o.TLSConfig = pool
	}
}

// asRelayError asserts err is a *relay.Error.
func asRelayError(t *testing.T, err error) *relay.Error {
	t.Helper()
	var e *relay.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *relay.Error", err, err)
	}
	return e
}

// crlf turns the "\n" of a readable literal into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// accepted asserts every outcome is a success.
func accepted(t *testing.T, out []relay.Outcome, want int) {
	t.Helper()
	if len(out) != want {
		t.Fatalf("got %d outcomes, want %d: %+v", len(out), want, out)
	}
	for _, o := range out {
		if o.Err != nil {
			t.Fatalf("recipient %s: %v", o.Address, o.Err)
		}
	}
}

// secretForms lists the password and the base64 forms AUTH puts on the wire.
func secretForms(user, password string) []string {
	enc := base64.StdEncoding.EncodeToString
	return []string{
		password,
		enc([]byte(password)),
		enc([]byte("\x00" + user + "\x00" + password)),
	}
}
