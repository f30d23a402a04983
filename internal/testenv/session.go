package testenv

import (
	"fmt"
	"os"
)

// Session runs this package's real-server launchers outside a test (the
// demo and the benchmark harness): it keeps their cleanups, which stop the
// servers by PID, and turns a fatal error into a panic that Guard recovers,
// so the cleanups still run.
type Session struct {
	Name     string // prefix of its messages on standard error
	SkipHint string // added to a missing-server message, e.g. "run `make demo`"
	cleanups []func()
}

// sessionFatal is the panic value of Session.Fatalf.
type sessionFatal struct{ msg string }

func (s *Session) Helper()          {}
func (s *Session) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }
func (s *Session) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, s.Name+": "+format+"\n", args...)
}
func (s *Session) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, s.Name+": error: "+format+"\n", args...)
}
func (s *Session) Fatal(args ...any) { s.Fatalf("%s", fmt.Sprint(args...)) }
func (s *Session) Fatalf(format string, args ...any) {
	panic(sessionFatal{msg: fmt.Sprintf(format, args...)})
}

// Skip is fatal outside a test: a missing server cannot be skipped.
func (s *Session) Skip(args ...any) {
	msg := fmt.Sprint(args...)
	if s.SkipHint != "" {
		msg += " (" + s.SkipHint + ")"
	}
	s.Fatalf("%s", msg)
}

func (s *Session) TempDir() string {
	d, err := os.MkdirTemp("", "popconn-session-")
	if err != nil {
		s.Fatal(err)
	}
	s.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Close runs the cleanups last-first, as testing does, once.
func (s *Session) Close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// Guard runs f and returns a Fatalf from within it as an error; any other
// panic goes on.
func Guard(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if fe, ok := p.(sessionFatal); ok {
				err = fmt.Errorf("%s", fe.msg)
				return
			}
			panic(p)
		}
	}()
	f()
	return nil
}
