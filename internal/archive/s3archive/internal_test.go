package s3archive

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
)

func TestOptionsDefaultsAndValidation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Options
		want    Options // compared when wantErr is empty
		wantErr string
	}{
		{"Defaults", Options{Bucket: "b"},
			Options{Bucket: "b", SSE: "AES256", PartSize: 8 << 20, MultipartThreshold: 8 << 20, Concurrency: 2, FailTimeout: 10 * time.Second, SpoolDir: os.TempDir(), SpoolFiles: DefaultSpoolFiles, SpoolBytes: DefaultSpoolBytes}, ""},
		{"KMSWithKey", Options{Bucket: "b", SSE: "aws:kms", KMSKeyID: "alias/k", Prefix: "/mail/archive/"},
			Options{Bucket: "b", Prefix: "mail/archive", SSE: "aws:kms", KMSKeyID: "alias/k", PartSize: 8 << 20, MultipartThreshold: 8 << 20, Concurrency: 2, FailTimeout: 10 * time.Second, SpoolDir: os.TempDir(), SpoolFiles: DefaultSpoolFiles, SpoolBytes: DefaultSpoolBytes}, ""},
		{"ThresholdBelowPart", Options{Bucket: "b", PartSize: 16 << 20, MultipartThreshold: 1 << 20, Concurrency: 1},
			Options{Bucket: "b", SSE: "AES256", PartSize: 16 << 20, MultipartThreshold: 1 << 20, Concurrency: 1, FailTimeout: 10 * time.Second, SpoolDir: os.TempDir(), SpoolFiles: DefaultSpoolFiles, SpoolBytes: DefaultSpoolBytes}, ""},
		{"NoBucket", Options{}, Options{}, "no bucket"},
		{"BadSSE", Options{Bucket: "b", SSE: "aws:kms:dsse"}, Options{}, "unsupported SSE"},
		{"KeyWithoutKMS", Options{Bucket: "b", KMSKeyID: "k"}, Options{}, "KMS key id needs SSE"},
		{"PartTooSmall", Options{Bucket: "b", PartSize: 1 << 20}, Options{}, "below S3's minimum"},
		{"ThresholdAbovePart", Options{Bucket: "b", MultipartThreshold: 9 << 20}, Options{}, "multipart threshold"},
		{"NegativeThreshold", Options{Bucket: "b", MultipartThreshold: -1}, Options{}, "multipart threshold"},
		{"NegativeConcurrency", Options{Bucket: "b", Concurrency: -1}, Options{}, "negative concurrency"},
		{"NegativeFailTimeout", Options{Bucket: "b", FailTimeout: -time.Second}, Options{}, "negative fail timeout"},
		{"BadPrefix", Options{Bucket: "b", Prefix: "a/../b"}, Options{}, "prefix"},
		{"NegativeSpool", Options{Bucket: "b", SpoolBytes: -1}, Options{}, "negative spool limits"},
		{"OwnSpool", Options{Bucket: "b", SpoolDir: "/var/spool/popconn", SpoolFiles: 4, SpoolBytes: 1 << 20},
			Options{Bucket: "b", SSE: "AES256", PartSize: 8 << 20, MultipartThreshold: 8 << 20, Concurrency: 2, FailTimeout: 10 * time.Second,
				SpoolDir: "/var/spool/popconn", SpoolFiles: 4, SpoolBytes: 1 << 20}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("withDefaults() error = %v, want one containing %q", err, tc.wantErr)
				}
				a := New(nil, tc.in)
				if a.Err() == nil {
					t.Fatalf("New(%+v).Err() = nil, want the options error", tc.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("withDefaults(): %v", err)
			}
			if got != tc.want {
				t.Fatalf("withDefaults() = %+v, want %+v", got, tc.want)
			}
		})
	}
	if New(nil, Options{Bucket: "b"}).Err() == nil {
		t.Error("New with a nil client: Err() = nil")
	}
}

func TestEncodeMetaValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"user@example.com", 100, "user@example.com"},
		{"<id@host>", 100, "<id@host>"},
		{"a b", 100, "a%20b"},
		{"100%", 100, "100%25"},
		{"x\r\nX-Evil: 1", 100, "x%0D%0AX-Evil:%201"},
		{"j\u00fcrgen", 100, "j%C3%BCrgen"},
		{"\x00\x7f\xff", 100, "%00%7F%FF"},
		{"abcdef", 4, "abcd"},
		// An escape is never split: "ab%0" would decode wrongly.
		{"ab\ncd", 4, "ab"},
		{"ab\ncd", 5, "ab%0A"},
		{"", 10, ""},
	} {
		got := encodeMetaValue(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("encodeMetaValue(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if len(got) > tc.max {
			t.Errorf("encodeMetaValue(%q, %d) is %d bytes", tc.in, tc.max, len(got))
		}
		if dec := DecodeMetaValue(got); !strings.HasPrefix(tc.in, dec) {
			t.Errorf("DecodeMetaValue(%q) = %q, not a prefix of %q", got, dec, tc.in)
		}
	}
	// Whole values round-trip.
	for _, v := range []string{"plain", "with space", "100% sure", "\r\n\t\x00\xff", "ünïcödé <a@b>"} {
		if got := DecodeMetaValue(encodeMetaValue(v, 1024)); got != v {
			t.Errorf("round trip of %q gave %q", v, got)
		}
	}
}

func TestEncodeMetaFitsS3Limit(t *testing.T) {
	huge := strings.Repeat("\xff", 10000)
	md := encodeMeta(metaOf(huge, huge, huge))
	total := len(MetaSHA256) + 64
	for k, v := range md {
		total += len(k) + len(v)
	}
	// S3 allows 2 KB of user metadata (names and values, UTF-8 bytes).
	if total > 2048 {
		t.Fatalf("metadata for hostile values is %d bytes, over S3's 2 KB", total)
	}
}

func metaOf(mailbox, uidl, id string) archive.Meta {
	return archive.Meta{Mailbox: mailbox, UIDL: uidl, MessageID: id}
}

func TestCopySource(t *testing.T) {
	for _, tc := range []struct{ bucket, key, want string }{
		{"b", "user@example.com/2024/05/17/abc.eml", "b/user%40example.com/2024/05/17/abc.eml"},
		{"b", "a+b c/%x.eml", "b/a%2Bb%20c/%25x.eml"},
		{"b", "p/j\u00fc", "b/p/j%C3%BC"},
		{"my-bucket.x", "A_z~0-9.eml", "my-bucket.x/A_z~0-9.eml"},
	} {
		if got := copySource(tc.bucket, tc.key); got != tc.want {
			t.Errorf("copySource(%q, %q) = %q, want %q", tc.bucket, tc.key, got, tc.want)
		}
	}
}

func TestObjectKeyAndValidation(t *testing.T) {
	a := New(nil, Options{Bucket: "b", Prefix: "/archive/"})
	if got := a.ObjectKey("box/x.eml"); got != "archive/box/x.eml" {
		t.Errorf("ObjectKey = %q, want archive/box/x.eml", got)
	}
	b := New(nil, Options{Bucket: "b"})
	if got := b.ObjectKey("box/x.eml"); got != "box/x.eml" {
		t.Errorf("ObjectKey without prefix = %q", got)
	}
	for _, k := range []string{"box/2024/05/17/abc.eml", "user@example.com/x.eml", "a b/c+d.eml"} {
		if err := validateKey(k); err != nil {
			t.Errorf("validateKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", "./a", "a/..", "a\x00", "a\x7f", `a\b`} {
		if err := validateKey(k); err == nil {
			t.Errorf("validateKey(%q) = nil, want an error", k)
		}
	}
}
