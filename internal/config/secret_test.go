package config

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// knownSecret is the value the leak tests look for. The first seven bytes
// are what yaml.v3 would quote in a type error, so they are checked too.
const knownSecret = "Tr0ub4dor&3-known-secret"

func assertNoSecret(t *testing.T, where, text string) {
	t.Helper()
	if strings.Contains(text, knownSecret) || strings.Contains(text, knownSecret[:7]) {
		t.Errorf("%s contains the secret:\n%s", where, text)
	}
}

func TestSecretsEnv(t *testing.T) {
	t.Setenv("POPCONN_TEST_SECRET", knownSecret)
	s := NewSecrets()
	v, err := s.Resolve(context.Background(), SecretRef("env:POPCONN_TEST_SECRET"))
	if err != nil || v != knownSecret {
		t.Fatalf("Resolve(env) = %q, %v", v, err)
	}
	_, err = s.Resolve(context.Background(), SecretRef("env:POPCONN_TEST_UNSET_VARIABLE"))
	if err == nil || err.Error() != "secret env:POPCONN_TEST_UNSET_VARIABLE: environment variable POPCONN_TEST_UNSET_VARIABLE is not set" {
		t.Errorf("Resolve(unset env) = %v", err)
	}
	t.Setenv("POPCONN_TEST_EMPTY", "")
	_, err = s.Resolve(context.Background(), SecretRef("env:POPCONN_TEST_EMPTY"))
	if err == nil || !strings.Contains(err.Error(), "value is empty") {
		t.Errorf("Resolve(empty env) = %v", err)
	}
}

func TestSecretsFile(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(private, []byte(knownSecret+"\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "shared")
	if err := os.WriteFile(shared, []byte(knownSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o644); err != nil { // umask-independent
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), maxSecretFile+1), 0o600); err != nil {
		t.Fatal(err)
	}

	s := NewSecrets()
	ctx := context.Background()
	if v, err := s.Resolve(ctx, SecretRef("file:"+private)); err != nil || v != knownSecret {
		t.Errorf("Resolve(private file) = %q, %v; want trailing newlines trimmed", v, err)
	}
	if w := s.Warnings(); len(w) != 0 {
		t.Errorf("warnings after a 0600 file: %q", w)
	}
	if v, err := s.Resolve(ctx, SecretRef("file:"+shared)); err != nil || v != knownSecret {
		t.Errorf("Resolve(shared file) = %q, %v; a readable file is a warning, not an error", v, err)
	}
	w := s.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "file mode 0644") || !strings.Contains(w[0], "chmod 600 "+shared) {
		t.Errorf("Warnings() = %q, want one about mode 0644", w)
	}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not a regular file"},
		{empty, "value is empty"},
		{big, "larger than"},
	} {
		_, err := s.Resolve(ctx, SecretRef("file:"+tt.path))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "secret file:"+tt.path+": ") {
			t.Errorf("Resolve(file:%s) = %v, want error naming the reference and %q", tt.path, err, tt.want)
		}
	}
	for _, text := range s.Warnings() {
		assertNoSecret(t, "warning", text)
	}
}

func TestSecretsSchemes(t *testing.T) {
	ctx := context.Background()
	s := NewSecrets()

	// secretsmanager: and ssm: are valid references with no built-in resolver.
	_, err := s.Resolve(ctx, SecretRef("ssm:/popconn/sales"))
	if !errors.Is(err, ErrUnknownScheme) || !strings.Contains(err.Error(), "ssm:/popconn/sales") {
		t.Errorf("Resolve(ssm, unregistered) = %v, want ErrUnknownScheme naming the reference", err)
	}

	var calls atomic.Int32
	var gotRef string
	s.Register("ssm", ResolverFunc(func(_ context.Context, ref string) (string, error) {
		calls.Add(1)
		gotRef = ref
		return "from-ssm", nil
	}))
	for range 3 {
		v, err := s.Resolve(ctx, SecretRef("ssm:/popconn/sales"))
		if err != nil || v != "from-ssm" {
			t.Fatalf("Resolve(ssm, registered) = %q, %v", v, err)
		}
	}
	if calls.Load() != 1 || gotRef != "ssm:/popconn/sales" {
		t.Errorf("resolver called %d times with %q; want once with the whole reference (cached)", calls.Load(), gotRef)
	}

	// A resolver's error is wrapped and named by reference.
	denied := errors.New("access denied")
	s.Register("secretsmanager:", ResolverFunc(func(context.Context, string) (string, error) { return "", denied }))
	_, err = s.Resolve(ctx, SecretRef("secretsmanager:popconn/relay"))
	if !errors.Is(err, denied) || err.Error() != "secret secretsmanager:popconn/relay: access denied" {
		t.Errorf("Resolve(failing resolver) = %v", err)
	}

	// Nothing is fetched for a cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Resolve(cctx, SecretRef("env:HOME"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Resolve(cancelled) = %v", err)
	}

	// Not a reference at all, or empty.
	for _, sec := range []Secret{SecretRef(knownSecret), SecretRef("vault:x"), SecretRef("env:not a name"), {}} {
		_, err := s.Resolve(ctx, sec)
		if !errors.Is(err, ErrNotReference) {
			t.Errorf("Resolve(%v) = %v, want ErrNotReference", sec, err)
		}
		if err != nil {
			assertNoSecret(t, "Resolve error", err.Error())
		}
	}
}

func TestSecretsConcurrent(t *testing.T) {
	t.Setenv("POPCONN_TEST_SECRET", knownSecret)
	s := NewSecrets()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if v, err := s.Resolve(context.Background(), SecretRef("env:POPCONN_TEST_SECRET")); err != nil || v != knownSecret {
					t.Errorf("Resolve = %q, %v", v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestSecretDisplay(t *testing.T) {
	tests := []struct {
		ref, want string
	}{
		{"env:POP_SALES", "env:POP_SALES"},
		{"file:/etc/popconn/sales.pass", "file:/etc/popconn/sales.pass"},
		{"ssm:/popconn/sales", "ssm:/popconn/sales"},
		{"", ""},
		{knownSecret, "[redacted]"},
		{"env:" + knownSecret, "[redacted]"},
	}
	for _, tt := range tests {
		s := SecretRef(tt.ref)
		text, _ := s.MarshalText()
		for _, got := range []string{s.String(), s.LogValue().String(), string(text)} {
			if got != tt.want {
				t.Errorf("SecretRef(%q) displays as %q, want %q", tt.ref, got, tt.want)
			}
		}
		if s.Ref() != tt.ref || s.IsZero() != (tt.ref == "") {
			t.Errorf("Ref/IsZero wrong for %q", tt.ref)
		}
	}
}

// No error, warning, formatted Config or log line carries a secret value,
// wherever in the file it was typed.
func TestNoSecretInOutput(t *testing.T) {
	base := func(extra string) string {
		return "postmaster: p@corp.example\ndelivery:\n  host: exchange.corp.example\n" + extra +
			"mailboxes:\n  - id: a\n    server: pop.isp.example\n    username: u\n    password: env:P\n    deliver_to: a@corp.example\n"
	}
	inputs := map[string]string{
		"fixture":           mustRead(t, "testdata/err_secrets.yaml"),
		"auth password":     base("  auth: {username: u, password: \"" + knownSecret + "\"}\n"),
		"password as map":   base("  auth: {username: u, password: {value: \"" + knownSecret + "\"}}\n"),
		"under timeout":     base("  timeout: \"" + knownSecret + "\"\n"),
		"under port":        base("  port: \"" + knownSecret + "\"\n"),
		"under verify":      base("  verify_certificate: \"" + knownSecret + "\"\n"),
		"under auth":        base("  auth: \"" + knownSecret + "\"\n"),
		"under size":        strings.Replace(base(""), "deliver_to:", "max_bytes_per_poll: \""+knownSecret+"\"\n    deliver_to:", 1),
		"under keep_days":   strings.Replace(base(""), "deliver_to:", "keep_days: \""+knownSecret+"\"\n    deliver_to:", 1),
		"under retry":       base("retry: \"" + knownSecret + "\"\n"),
		"as list item":      base("  auth: {username: u, password: [\"" + knownSecret + "\"]}\n"),
		"env-like":          base("  auth: {username: u, password: \"env:" + knownSecret + "\"}\n"),
		"ssm with spaces":   base("  auth: {username: u, password: \"ssm:" + knownSecret + " x\"}\n"),
		"unknown key value": base("  password: \"" + knownSecret + "\"\n"),
	}
	for name, in := range inputs {
		_, err := Parse([]byte(in))
		if err == nil {
			t.Errorf("%s: Parse accepted it", name)
			continue
		}
		assertNoSecret(t, name+": Parse error", err.Error())
	}

	// A Config built in code with a literal, printed every usual way.
	c := mustParseFile(t, "valid_minimal.yaml")
	c.Mailboxes[0].Password = SecretRef(knownSecret)
	c.Delivery.Auth = &Auth{Mechanism: AuthPlain, Username: "relay", Password: SecretRef(knownSecret)}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a literal password")
	}
	assertNoSecret(t, "Validate error", err.Error())
	assertNoSecret(t, "Warnings", strings.Join(c.Warnings(), "\n"))
	assertNoSecret(t, "fmt", fmt.Sprintf("%v %+v %#v %s %v %+v %#v", c, *c, *c, c.Mailboxes[0].Password, c.Mailboxes, c.Delivery.Auth, c.Mailboxes[0]))
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("config", "mailbox", c.Mailboxes[0], "password", c.Mailboxes[0].Password, "auth", c.Delivery.Auth)
	}
	assertNoSecret(t, "log", logs.String())
	if !strings.Contains(logs.String(), "[redacted]") {
		t.Errorf("log shows no redaction marker:\n%s", logs.String())
	}
}

func TestLoadCAFile(t *testing.T) {
	if _, err := LoadCAFile("testdata/ca.pem"); err != nil {
		t.Errorf("LoadCAFile(ca.pem): %v", err)
	}
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	ca := mustRead(t, "testdata/ca.pem")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		path, want string
	}{
		{write("key.pem", append([]byte(ca), keyPEM...)), `PEM block of type "PRIVATE KEY"`},
		{write("garbage.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")})), "certificate 1 does not parse"},
		{write("empty.pem", nil), "holds no PEM certificate"},
		{filepath.Join(dir, "missing.pem"), "no such file"},
	}
	for _, tt := range tests {
		_, err := LoadCAFile(tt.path)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadCAFile(%s) = %v, want error containing %q", filepath.Base(tt.path), err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), string(keyPEM[30:60])) {
			t.Errorf("LoadCAFile error repeats key material: %v", err)
		}
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
