package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequired(t *testing.T) {
	tests := []struct {
		ci, integ string
		want      bool
	}{
		{"", "", false},
		{"true", "", true},
		{"1", "", true},
		{"false", "", false},
		{"", "1", true},
		{"", "0", false},
		{"false", "1", true},
	}
	for _, tc := range tests {
		t.Setenv("CI", tc.ci)
		t.Setenv("POPCONN_INTEGRATION", tc.integ)
		if got := Required(); got != tc.want {
			t.Errorf("CI=%q POPCONN_INTEGRATION=%q: Required() = %v, want %v", tc.ci, tc.integ, got, tc.want)
		}
	}
}

// outcomeRecorder records how a helper ended the test (Skip or Fatal)
// without ending the real one.
type outcomeRecorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

type stopPanic struct{}

func (r *outcomeRecorder) Helper() {}
func (r *outcomeRecorder) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	panic(stopPanic{})
}
func (r *outcomeRecorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	panic(stopPanic{})
}

func (r *outcomeRecorder) run(f func(testing.TB)) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(stopPanic); !ok {
				panic(v)
			}
		}
	}()
	f(r)
}

func TestNeedBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "fake-server")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/nonexistent-path-dir")

	t.Run("candidate found outside PATH", func(t *testing.T) {
		if got := NeedBinary(t, "fake-server", exe); got != exe {
			t.Fatalf("NeedBinary = %q, want %q", got, exe)
		}
	})

	t.Run("missing skips when not required", func(t *testing.T) {
		t.Setenv("CI", "")
		t.Setenv("POPCONN_INTEGRATION", "")
		r := &outcomeRecorder{TB: t}
		r.run(func(tb testing.TB) { NeedBinary(tb, "no-such-server-xyz", filepath.Join(dir, "nope")) })
		if !r.skipped || r.failed {
			t.Fatalf("skipped=%v failed=%v, want a skip", r.skipped, r.failed)
		}
		if !strings.Contains(r.msg, "no-such-server-xyz not installed") || !strings.Contains(r.msg, "infra/install-deps.sh") {
			t.Fatalf("skip reason %q lacks the name or the install hint", r.msg)
		}
	})

	t.Run("missing fails when required", func(t *testing.T) {
		t.Setenv("CI", "")
		t.Setenv("POPCONN_INTEGRATION", "1")
		r := &outcomeRecorder{TB: t}
		r.run(func(tb testing.TB) { NeedBinary(tb, "no-such-server-xyz") })
		if !r.failed || r.skipped {
			t.Fatalf("skipped=%v failed=%v, want a failure", r.skipped, r.failed)
		}
	})

	t.Run("sbin fallback", func(t *testing.T) {
		if _, err := os.Stat("/usr/sbin/dovecot"); err != nil {
			t.Skip("no /usr/sbin/dovecot on this machine")
		}
		if got := NeedBinary(t, "dovecot"); got != "/usr/sbin/dovecot" {
			t.Fatalf("NeedBinary(dovecot) with empty PATH = %q", got)
		}
	})
}
