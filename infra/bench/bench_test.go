package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/config"
)

// served turns stored LF line ends into CRLF, as Dovecot serves them.
func served(stored []byte) []byte {
	return bytes.ReplaceAll(stored, []byte("\n"), []byte("\r\n"))
}

func TestWriteMessageExactServedSize(t *testing.T) {
	// Sizes around every remainder of the 78-octet body line, including the
	// awkward remainder 1, and the workload sizes themselves.
	sizes := []int64{20_000, 1_000_000, 10_000_000}
	for extra := int64(0); extra < 80; extra++ {
		sizes = append(sizes, 2000+extra)
	}
	for _, size := range sizes {
		wl := Workload{Name: "t", Count: 3, Size: size}
		for idx := 0; idx < 3; idx++ {
			var b bytes.Buffer
			n, err := WriteMessage(&b, wl, idx)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if n != int64(b.Len()) {
				t.Fatalf("size %d: reported %d stored octets, wrote %d", size, n, b.Len())
			}
			wire := served(b.Bytes())
			if int64(len(wire)) != size {
				t.Fatalf("size %d idx %d: served size %d", size, idx, len(wire))
			}
			for _, line := range bytes.Split(b.Bytes(), []byte("\n")) {
				if bytes.HasPrefix(line, []byte(".")) {
					t.Fatalf("size %d: a line starts with '.', dot-stuffing would change the size", size)
				}
				if len(line) > 998 {
					t.Fatalf("size %d: line of %d octets", size, len(line))
				}
			}
			if !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
				t.Fatalf("size %d: message does not end with a line break", size)
			}
		}
	}
}

func TestWriteMessageDeterministicAndDistinct(t *testing.T) {
	wl := Workload{Name: "a", Count: 2, Size: 20_000}
	gen := func(idx int) []byte {
		var b bytes.Buffer
		if _, err := WriteMessage(&b, wl, idx); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if !bytes.Equal(gen(0), gen(0)) {
		t.Fatal("the same message differs between two generations")
	}
	_, b0, _ := bytes.Cut(gen(0), []byte("\n\n"))
	_, b1, _ := bytes.Cut(gen(1), []byte("\n\n"))
	if bytes.Equal(b0, b1) {
		t.Fatal("messages 0 and 1 have the same body")
	}
	if idx, err := messageIndex(served(gen(1)), wl); err != nil || idx != 1 {
		t.Fatalf("messageIndex = %d, %v; want 1", idx, err)
	}
}

func TestWriteMessageTooSmall(t *testing.T) {
	if _, err := WriteMessage(&bytes.Buffer{}, Workload{Name: "a", Count: 1, Size: 100}, 0); err == nil {
		t.Fatal("a size below the header was accepted")
	}
}

func TestSeedNamesCarrySizes(t *testing.T) {
	md := t.TempDir()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.Mkdir(filepath.Join(md, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	wl := Workload{Name: "b", Count: 4, Size: 5000}
	if err := Seed(md, wl, 7, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(md, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != wl.Count {
		t.Fatalf("%d files in new/, want %d", len(entries), wl.Count)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(md, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(e.Name(), ",W=5000") || !strings.Contains(e.Name(), ",S="+strconv.Itoa(len(data))) {
			t.Errorf("name %q does not carry S=%d and W=5000", e.Name(), len(data))
		}
	}
	if left, _ := os.ReadDir(filepath.Join(md, "tmp")); len(left) != 0 {
		t.Errorf("%d files left in tmp/", len(left))
	}
}

func TestParseTimeV(t *testing.T) {
	data, err := os.ReadFile("testdata/time-v.txt")
	if err != nil {
		t.Fatal(err)
	}
	tv, err := ParseTimeV(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// testdata/time-v.txt is GNU time 1.9's real output for a shell loop
	// and a 2.5 MB fsynced dd.
	want := TimeV{UserSec: 0.07, SysSec: 0, MaxRSSKB: 1876, ExitCode: 0, VolCtxSw: 11, InvCtxSw: 16, FSOutputs: 5128}
	if tv != want {
		t.Fatalf("got %+v\nwant %+v", tv, want)
	}
	if _, err := ParseTimeV(strings.NewReader("\tUser time (seconds): 0.10\n")); err == nil {
		t.Fatal("incomplete output accepted")
	}
}

func TestLastMesgCounter(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want int
		err  bool
	}{
		{"empty", "", 0, false},
		{"one", "sess=0 quit=0 mesg=1\r", 1, false},
		{"several", "sess=0 quit=0 mesg=1\rsess=0 quit=0 mesg=2\rsess=1 quit=1 mesg=2\r", 2, false},
		{"partial last record ignored", "sess=0 quit=0 mesg=41\rsess=0 quit=0 mesg=4", 41, false},
		{"cut at the start", "sg=9\rsess=3 quit=3 mesg=1200\r", 1200, false},
		{"garbage", "smtp-sink: fatal: something\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lastMesgCounter([]byte(tc.out))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestPopconnConfigIsValid(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	// The TLS variant's ca_file must hold a certificate: a self-signed
	// P-256 one (openssl req -x509) serves.
	pem, err := os.ReadFile("testdata/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, useTLS := range []bool{false, true} {
		text := popconnConfig("127.0.0.1:1110", "127.0.0.1:2525", useTLS, ca, pass, filepath.Join(dir, "archive"), filepath.Join(dir, "ledger.db"))
		cfg, err := config.Parse([]byte(text))
		if err != nil {
			t.Fatalf("tls=%v: %v\n%s", useTLS, err, text)
		}
		m := cfg.Mailboxes[0]
		if m.MaxMessagesPerPoll != 0 || m.MaxBytesPerPoll != 0 {
			t.Errorf("tls=%v: per-poll limits %d, %d; the benchmark needs none", useTLS, m.MaxMessagesPerPoll, m.MaxBytesPerPoll)
		}
		if string(m.AfterDelivery) != "delete" {
			t.Errorf("tls=%v: after_delivery %q", useTLS, m.AfterDelivery)
		}
	}
}

func TestFetchmailRC(t *testing.T) {
	plain := fetchmailRC("127.0.0.1:1110", "127.0.0.1:2525", false, "/ca.pem")
	for _, want := range []string{"poll 127.0.0.1 with proto POP3 service 1110", `smtphost "127.0.0.1/2525"`, "fetchall nokeep", `sslproto ""`} {
		if !strings.Contains(plain, want) {
			t.Errorf("plain rcfile lacks %q:\n%s", want, plain)
		}
	}
	if strings.Contains(plain, "sslcertck") {
		t.Errorf("plain rcfile asks for TLS:\n%s", plain)
	}
	tlsRC := fetchmailRC("127.0.0.1:1995", "127.0.0.1:2525", true, "/ca.pem")
	for _, want := range []string{"ssl ", "sslcertck", `sslcertfile "/ca.pem"`, `sslcommonname "localhost"`} {
		if !strings.Contains(tlsRC, want) {
			t.Errorf("TLS rcfile lacks %q:\n%s", want, tlsRC)
		}
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestMpopRC(t *testing.T) {
	plain := mpopRC("127.0.0.1:1110", false, "/ca.pem", "/run/md", "/run/uidls")
	for _, want := range []string{"host 127.0.0.1\nport 1110\n", "pipelining on\n", "delivery maildir /run/md\n", "keep off\n", "only_new off\n", "tls off\n"} {
		if !strings.Contains(plain, want) {
			t.Errorf("plain mpoprc lacks %q:\n%s", want, plain)
		}
	}
	tlsRC := mpopRC("127.0.0.1:1995", true, "/ca.pem", "/run/md", "/run/uidls")
	for _, want := range []string{"tls on\n", "tls_starttls off\n", "tls_trust_file /ca.pem\n"} {
		if !strings.Contains(tlsRC, want) {
			t.Errorf("TLS mpoprc lacks %q:\n%s", want, tlsRC)
		}
	}
}

func TestParseOptionsRTT(t *testing.T) {
	o, err := parseOptions([]string{"--rtt", "0,20ms", "--workloads", "a", "--tls", "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.rtts) != 2 || o.rtts[0] != 0 || o.rtts[1] != 20_000_000 {
		t.Fatalf("rtts %v", o.rtts)
	}
	if o.rtts[0] != 0 || rttList(o.rtts) != "0s,20ms" || rttList([]time.Duration{0}) != "" {
		t.Fatalf("rttList %q", rttList(o.rtts))
	}
	for _, bad := range [][]string{{"--rtt", "20"}, {"--rtt", "-5ms"}, {"--sink", "exim"}, {"--sink", "postfix", "--verify"}} {
		if _, err := parseOptions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// Keys without an RTT stay as they were, so older .json files compare.
	wl := Workload{Name: "a", Count: 1, Size: 1}
	if k := resultKey(rowKey{wl, false, 0}, variant{Tool: toolPopconn}); k != "a/false/popconn" {
		t.Errorf("key %q", k)
	}
	if k := resultKey(rowKey{wl, true, 20_000_000}, variant{Tool: toolMpop}); k != "a/true/mpop/rtt=20ms" {
		t.Errorf("key %q", k)
	}
}
