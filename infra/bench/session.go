package main

import (
	"fmt"
	"os"
)

// session lets testenv's real-server launchers run outside a test: it keeps
// their cleanups (which stop the servers by PID) and turns a fatal error into
// a panic that main recovers, so the cleanups still run.
type session struct {
	name     string // prefix for messages on stderr
	cleanups []func()
}

// fatal is the panic value of session.Fatalf.
type fatal struct{ msg string }

func (s *session) Helper()          {}
func (s *session) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }
func (s *session) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, s.name+": "+format+"\n", args...)
}
func (s *session) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, s.name+": error: "+format+"\n", args...)
}
func (s *session) Fatal(args ...any) { s.Fatalf("%s", fmt.Sprint(args...)) }
func (s *session) Fatalf(format string, args ...any) {
	panic(fatal{msg: fmt.Sprintf(format, args...)})
}
func (s *session) Skip(args ...any) {
	s.Fatalf("%s (make bench-compare installs what is needed)", fmt.Sprint(args...))
}
func (s *session) TempDir() string {
	d, err := os.MkdirTemp("", "popconn-bench-")
	if err != nil {
		s.Fatal(err)
	}
	s.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// cleanup runs the cleanups last-first, as testing does, once.
func (s *session) cleanup() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// guard runs f and turns a session.Fatalf panic into an error.
func guard(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if fe, ok := p.(fatal); ok {
				err = fmt.Errorf("%s", fe.msg)
				return
			}
			panic(p)
		}
	}()
	f()
	return nil
}
