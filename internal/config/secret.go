package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Secret is a reference to a secret, never the secret itself. In YAML it is
// a scalar naming where the value lives:
//
//	env:NAME                 environment variable NAME
//	file:PATH                contents of PATH, trailing newlines removed
//	secretsmanager:ID        AWS Secrets Manager secret (name or ARN)
//	ssm:/param/name          AWS Systems Manager parameter (name or ARN)
//
// Anything else, in particular an inline password, is rejected by
// Validate. Because a mistyped Secret may hold a literal password, String,
// LogValue, GoString and MarshalText print the reference only when it is a
// well-formed reference, and "[redacted]" otherwise.
type Secret struct{ ref string }

// SecretRef makes a Secret from a reference string, for configurations
// built in code. It does not check the reference; Validate does.
func SecretRef(ref string) Secret { return Secret{ref: ref} }

// Ref returns the reference exactly as configured. Callers must not log it
// unless the Secret has passed Validate; use String for display.
func (s Secret) Ref() string { return s.ref }

// IsZero reports whether no reference was configured.
func (s Secret) IsZero() bool { return s.ref == "" }

// String returns the reference for display, or "[redacted]" if it is not a
// well-formed reference (and so might be a literal secret).
func (s Secret) String() string {
	if s.ref == "" || checkSecretRef(s.ref) == "" {
		return s.ref
	}
	return redacted
}

const redacted = "[redacted]"

// GoString keeps %#v from printing the unexported field.
func (s Secret) GoString() string { return fmt.Sprintf("config.SecretRef(%q)", s.String()) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler with String's redaction, so
// JSON or YAML dumps of a Config show references only.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalYAML implements yaml.Unmarshaler. Any scalar is accepted here
// (numbers included, so a literal password like 123456 reaches Validate and
// gets the helpful message instead of a type error).
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a secret reference such as env:NAME or file:PATH")
	}
	s.ref = n.Value
	return nil
}

// Schemes Validate accepts in a Secret.
var secretSchemes = []string{"env", "file", "secretsmanager", "ssm"}

func isSecretScheme(scheme string) bool {
	for _, k := range secretSchemes {
		if scheme == k {
			return true
		}
	}
	return false
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkSecretRef returns "" for a well-formed reference, otherwise a
// message that does not contain any part of ref.
func checkSecretRef(ref string) string {
	if ref == "" {
		return "required: a secret reference such as env:NAME or file:PATH"
	}
	scheme, rest, ok := strings.Cut(ref, ":")
	if !ok || !isSecretScheme(scheme) {
		return "must be a secret reference, not the secret itself: put the password in an environment variable " +
			"and write env:VARIABLE_NAME, or in a file readable only by popconn and write file:/path/to/file " +
			"(secretsmanager:NAME and ssm:/parameter/name are accepted too)"
	}
	switch scheme {
	case "env":
		if !envNameRE.MatchString(rest) {
			return "env: must be followed by an environment variable name (letters, digits, underscore), e.g. env:POP_SALES"
		}
	case "file":
		if rest == "" || strings.ContainsRune(rest, 0) {
			return "file: must be followed by a path, e.g. file:/etc/popconn/sales.pass"
		}
	case "secretsmanager", "ssm":
		if rest == "" || strings.ContainsAny(rest, " \t\r\n") {
			return scheme + ": must be followed by a name or ARN without spaces"
		}
	}
	return ""
}

// Resolver fetches the value a reference names. It receives the whole
// reference including its scheme ("ssm:/popconn/sales"). Its errors must not
// contain the value.
type Resolver interface {
	Resolve(ctx context.Context, ref string) (string, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, ref string) (string, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, ref string) (string, error) { return f(ctx, ref) }

// ErrUnknownScheme reports a reference whose scheme has no Resolver.
var ErrUnknownScheme = errors.New("no resolver for this secret scheme")

// ErrNotReference reports a Secret that is empty or not a reference.
var ErrNotReference = errors.New("not a secret reference")

// maxSecretFile bounds what a file: secret may hold, so a reference to a
// device or a log file fails instead of reading without end.
const maxSecretFile = 64 << 10

// Secrets resolves Secret references to values. env: and file: are built
// in; other schemes (secretsmanager:, ssm:) work once a Resolver is
// registered for them. Values are cached for the life of the Secrets, so
// each reference is looked up once. Errors name the reference, never a
// value. Safe for concurrent use.
type Secrets struct {
	mu        sync.Mutex
	resolvers map[string]Resolver
	cache     map[string]string
	warnings  []string
	warned    map[string]bool
}

// NewSecrets returns a Secrets with the env: and file: resolvers.
func NewSecrets() *Secrets {
	s := &Secrets{
		resolvers: map[string]Resolver{},
		cache:     map[string]string{},
		warned:    map[string]bool{},
	}
	s.resolvers["env"] = ResolverFunc(resolveEnv)
	s.resolvers["file"] = ResolverFunc(s.resolveFile)
	return s
}

// Register makes r resolve references of scheme ("ssm", without the
// colon), replacing any earlier resolver for it. It panics if r is nil.
func (s *Secrets) Register(scheme string, r Resolver) {
	if r == nil {
		panic("config: Register with nil Resolver")
	}
	scheme = strings.TrimSuffix(scheme, ":")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resolvers[scheme] = r
}

// Resolve returns the value sec refers to. An empty value is an error: an
// empty password is always a mistake in this program.
func (s *Secrets) Resolve(ctx context.Context, sec Secret) (string, error) {
	ref := sec.ref
	if ref == "" {
		return "", fmt.Errorf("secret: %w: none configured", ErrNotReference)
	}
	scheme, _, ok := strings.Cut(ref, ":")
	s.mu.Lock()
	r := s.resolvers[scheme]
	v, cached := s.cache[ref]
	s.mu.Unlock()
	known := ok && isSecretScheme(scheme)
	if known && checkSecretRef(ref) != "" || !known && r == nil {
		// Possibly a literal secret: do not repeat it.
		return "", fmt.Errorf("secret %s: %w", redacted, ErrNotReference)
	}
	if r == nil {
		return "", fmt.Errorf("secret %s: %w %q (the AWS resolvers are registered only in AWS mode)", ref, ErrUnknownScheme, scheme)
	}
	if cached {
		return v, nil
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("secret %s: %w", ref, err)
	}
	v, err := r.Resolve(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("secret %s: %w", ref, err)
	}
	if v == "" {
		return "", fmt.Errorf("secret %s: value is empty", ref)
	}
	s.mu.Lock()
	s.cache[ref] = v
	s.mu.Unlock()
	return v, nil
}

// Warnings returns the non-fatal problems seen while resolving, such as a
// secret file that other users can read.
func (s *Secrets) Warnings() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.warnings...)
}

func (s *Secrets) warn(key, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.warned[key] {
		s.warned[key] = true
		s.warnings = append(s.warnings, msg)
	}
}

func resolveEnv(_ context.Context, ref string) (string, error) {
	name := strings.TrimPrefix(ref, "env:")
	if !envNameRE.MatchString(name) {
		return "", ErrNotReference
	}
	v, ok := os.LookupEnv(name)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", name)
	}
	return v, nil
}

func (s *Secrets) resolveFile(_ context.Context, ref string) (string, error) {
	path := strings.TrimPrefix(ref, "file:")
	if path == "" {
		return "", ErrNotReference
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", err // *PathError names the path and the cause only
	}
	if runtime.GOOS != "windows" && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
		s.warn(ref, fmt.Sprintf("secret %s: file mode %04o lets other users read or change it; run chmod 600 %s",
			ref, st.Mode().Perm(), path))
	}
	b, err := readRegularFile(path, maxSecretFile)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
