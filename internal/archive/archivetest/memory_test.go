package archivetest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/archivetest"
)

func TestMemoryContract(t *testing.T) {
	archivetest.Run(t, func(t *testing.T) archive.Archive { return archivetest.NewMemory() })
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Staged bytes are invisible until Commit; Discard keeps what the key held.
func TestMemoryStaging(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name     string
		previous string // "" = no object before
		finish   func(t *testing.T, st archive.Staged)
		want     string // object afterwards; "" = none
	}{
		{"commit", "", func(t *testing.T, st archive.Staged) { mustCommit(t, st, ctx) }, "new"},
		{"commit replaces", "old", func(t *testing.T, st archive.Staged) { mustCommit(t, st, ctx) }, "new"},
		{"commit twice", "", func(t *testing.T, st archive.Staged) { mustCommit(t, st, ctx); mustCommit(t, st, ctx) }, "new"},
		{"discard after commit does nothing", "", func(t *testing.T, st archive.Staged) { mustCommit(t, st, ctx); st.Discard() }, "new"},
		{"discard", "", func(t *testing.T, st archive.Staged) { st.Discard() }, ""},
		{"discard keeps previous", "old", func(t *testing.T, st archive.Staged) { st.Discard() }, "old"},
		{"commit after discard fails", "old", func(t *testing.T, st archive.Staged) {
			st.Discard()
			if err := st.Commit(ctx); err == nil {
				t.Error("Commit after Discard succeeded")
			}
		}, "old"},
		{"cancelled commit", "old", func(t *testing.T, st archive.Staged) {
			if err := st.Commit(cancelled); err == nil {
				t.Error("Commit with a cancelled context succeeded")
			}
		}, "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := archivetest.NewMemory()
			const key = "box/2026/06/01/x.eml"
			if tt.previous != "" {
				if _, err := a.Put(ctx, key, archive.Meta{UIDL: "old"}, strings.NewReader(tt.previous)); err != nil {
					t.Fatal(err)
				}
			}
			st, err := a.Stage(ctx, key, archive.Meta{Mailbox: "box", UIDL: "u1"}, strings.NewReader("new"))
			if err != nil {
				t.Fatal(err)
			}
			if info := st.Info(); info.Key != key || info.Size != 3 || info.SHA256 != sum("new") {
				t.Fatalf("Info = %+v", info)
			}
			if got, _ := a.Bytes(key); string(got) != tt.previous {
				t.Fatalf("staged bytes visible before Commit: %q", got)
			}
			tt.finish(t, st)
			got, ok := a.Bytes(key)
			if string(got) != tt.want || ok != (tt.want != "") {
				t.Fatalf("object afterwards %q (present %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func mustCommit(t *testing.T, st archive.Staged, ctx context.Context) {
	t.Helper()
	if err := st.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// The accessors show what is stored and hand out copies.
func TestMemoryAccessors(t *testing.T) {
	ctx := context.Background()
	a := archivetest.NewMemory()
	meta := archive.Meta{Mailbox: "box", UIDL: "u1", MessageID: "id@example.com"}
	for _, k := range []string{"b/1.eml", "a/2.eml"} {
		if _, err := a.Put(ctx, k, meta, strings.NewReader("data of "+k)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(a.Keys(), " "); got != "a/2.eml b/1.eml" {
		t.Fatalf("Keys = %s", got)
	}
	b, ok := a.Bytes("a/2.eml")
	if !ok || string(b) != "data of a/2.eml" {
		t.Fatalf("Bytes = %q, %v", b, ok)
	}
	b[0] = 'X'
	if again, _ := a.Bytes("a/2.eml"); !bytes.Equal(again, []byte("data of a/2.eml")) {
		t.Fatalf("a caller's change reached the stored object: %q", again)
	}
	if m, ok := a.Meta("b/1.eml"); !ok || m != meta {
		t.Fatalf("Meta = %+v, %v", m, ok)
	}
	if _, ok := a.Bytes("missing"); ok {
		t.Fatal("Bytes found a missing key")
	}
	// A reader opened before a replace keeps the object it opened.
	rc, err := a.Open(ctx, "a/2.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := a.Put(ctx, "a/2.eml", meta, strings.NewReader("replaced")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rc); got != "data of a/2.eml" {
		t.Fatalf("open reader read %q after a replace", got)
	}
}

func readAll(t *testing.T, rc interface{ Read([]byte) (int, error) }) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
