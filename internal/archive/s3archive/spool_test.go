package s3archive_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/archivetest"
	"github.com/popconnector/popconnector/internal/archive/s3archive"
	"github.com/popconnector/popconnector/internal/testenv"
)

// Stage keeps a message local until Commit uploads it; Open then serves
// the committed copy from the spool (the object removed behind the
// archive's back still opens) until the spool's limits evict it, after
// which S3 answers. Discard leaves nothing, locally or in S3.
func TestSpool(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	spoolDir := t.TempDir()
	prefix := newPrefix("spool")
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, Prefix: prefix, SpoolDir: spoolDir, SpoolFiles: 2})
	stage := func(uidl string, seed uint64, size int64) archive.Staged {
		t.Helper()
		st, err := a.Stage(ctx, key(uidl), archive.Meta{UIDL: uidl}, archivetest.Stream(seed, size))
		if err != nil {
			t.Fatalf("Stage %s: %v", uidl, err)
		}
		return st
	}
	wantSame := func(uidl string, seed uint64, size int64) {
		t.Helper()
		rc, err := a.Open(ctx, key(uidl))
		if err != nil {
			t.Fatalf("Open %s: %v", uidl, err)
		}
		defer rc.Close()
		wantSize, wantSum := archivetest.Digest(t, archivetest.Stream(seed, size))
		if n, sum := archivetest.Digest(t, rc); n != wantSize || sum != wantSum {
			t.Fatalf("Open %s: %d bytes %s, want %d %s", uidl, n, sum, wantSize, wantSum)
		}
	}

	one := stage("one", 1, 300_000)
	if _, err := a.Open(ctx, key("one")); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Open before Commit = %v, want ErrNotFound (nothing visible until Commit)", err)
	}
	if err := one.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if info := one.Info(); info.Size != 300_000 {
		t.Errorf("staged info %+v", info)
	}
	wantSame("one", 1, 300_000)
	head(t, gw, prefix+"/"+key("one")) // the object is in S3

	// Served locally: gone from S3, still opens.
	if _, err := gw.Client(t).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(prefix + "/" + key("one"))}); err != nil {
		t.Fatal(err)
	}
	wantSame("one", 1, 300_000)

	// Two more committed: the spool keeps two, so "one" is evicted and
	// its Open goes to S3, which no longer has it.
	for i, u := range []string{"two", "three"} {
		if err := stage(u, uint64(2+i), 1000).Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Open(ctx, key("one")); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Open of an evicted copy = %v, want S3's ErrNotFound", err)
	}
	wantSame("three", 3, 1000)

	// Discarded: no object, no file left beyond the two kept copies.
	gone := stage("gone", 9, 5000)
	gone.Discard()
	if err := gone.Commit(ctx); err == nil {
		t.Error("Commit after Discard succeeded")
	}
	if _, err := a.Open(ctx, key("gone")); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Open of a discarded message = %v, want ErrNotFound", err)
	}
	// A Commit that fails (here: its context is done) leaves no file.
	failed := stage("failed", 10, 5000)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := failed.Commit(cctx); err == nil {
		t.Error("Commit with a cancelled context succeeded")
	}
	var files int
	filepath.WalkDir(spoolDir, func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			files++
		}
		return nil
	})
	if files != 2 {
		t.Errorf("%d files in the spool, want the 2 kept copies", files)
	}
}

// A Stage whose reader fails, or whose context is done, leaves no file
// and no object.
func TestSpoolStageFailure(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	spoolDir := t.TempDir()
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("spoolfail"), SpoolDir: spoolDir})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		r    io.Reader
	}{
		{"reader fails", context.Background(), io.MultiReader(archivetest.Stream(1, 1000), failingReader{})},
		{"context done", ctx, archivetest.Stream(2, 1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := a.Stage(tc.ctx, key(tc.name), archive.Meta{}, tc.r); err == nil {
				t.Fatal("Stage succeeded")
			}
			entries, _ := filepath.Glob(filepath.Join(spoolDir, "popconn-spool-*", "*"))
			if len(entries) != 0 {
				t.Errorf("left in the spool: %v", entries)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
