package config

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string // "" = success
	}{
		{"10m", 10 * time.Minute, ""},
		{"72h", 72 * time.Hour, ""},
		{"90s", 90 * time.Second, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"7d", 7 * day, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"2d30m15s", 2*day + 30*time.Minute + 15*time.Second, ""},
		{"0", 0, ""},
		{"0d", 0, ""},
		{"-5m", -5 * time.Minute, ""},
		{"-1d", -day, ""},
		{"+1d", day, ""},
		{" 10m ", 10 * time.Minute, ""},
		{"106751d", 106751 * day, ""},
		{"", 0, "use a number and unit"},
		{"-", 0, "use a number and unit"},
		{"10", 0, "a unit is required"},
		{"d", 0, "days must be a whole number"},
		{"1.5d", 0, "days must be a whole number"},
		{"1d-5h", 0, "sign only at the start"},
		{"1dd", 0, "use a number and unit"},
		{"10 minutes", 0, "use a number and unit"},
		{"106752d", 0, "too large"},
		{"106751d24h", 0, "too large"},
		{"99999999999999999999d", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseDuration(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
		}
	}
}

func TestDurationStringRoundTrips(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{time.Second, "1s"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{90 * time.Minute, "1h30m"},
		{2 * time.Hour, "2h"},
		{36 * time.Hour, "36h"},
		{5 * 24 * time.Hour, "5d"},
		{-24 * time.Hour, "-1d"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tt := range tests {
		s := Duration(tt.d).String()
		if s != tt.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tt.d, s, tt.want)
		}
		back, err := ParseDuration(s)
		if err != nil || back != tt.d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, back, err, tt.d)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr string
	}{
		{"0", 0, ""},
		{"1024", 1024, ""},
		{"7B", 7, ""},
		{"1KiB", 1 << 10, ""},
		{"1kib", 1 << 10, ""},
		{"1 MiB", 1 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"1KB", 1000, ""},
		{"500MB", 500_000_000, ""},
		{"1gb", 1_000_000_000, ""},
		{"2TB", 2_000_000_000_000, ""},
		{"", 0, "use a whole number of bytes"},
		{"GiB", 0, "use a whole number of bytes"},
		{"-1", 0, "use a whole number of bytes"},
		{"1.5GiB", 0, "unknown unit"},
		{"1XB", 0, "unknown unit"},
		{"1 G", 0, "unknown unit"},
		{"99999999999999999999", 0, "too large"},
		{"9000000TiB", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseSize(%q) = %v, %v; want %d", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseSize(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
		}
	}
}

func TestSizeStringRoundTrips(t *testing.T) {
	tests := []struct {
		z    Size
		want string
	}{
		{0, "0B"}, {1000, "1000B"}, {1 << 10, "1KiB"}, {1536 << 10, "1536KiB"},
		{1 << 30, "1GiB"}, {3 << 40, "3TiB"}, {500_000_000, "500000000B"},
	}
	for _, tt := range tests {
		s := tt.z.String()
		if s != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.z), s, tt.want)
		}
		if back, err := ParseSize(s); err != nil || back != tt.z {
			t.Errorf("ParseSize(%q) = %v, %v; want %d", s, back, err, int64(tt.z))
		}
	}
}

// The YAML unmarshalers report problems as line-numbered type errors and
// marshal back to a form they read.
func TestDurationAndSizeYAML(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
		Z Size     `yaml:"z"`
	}
	if err := yaml.Unmarshal([]byte("d: 1d12h\nz: 500 MiB\n"), &v); err != nil {
		t.Fatal(err)
	}
	if time.Duration(v.D) != 36*time.Hour || v.Z != 500<<20 {
		t.Errorf("decoded %v %v", v.D, v.Z)
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "d: 36h\nz: 500MiB\n" {
		t.Errorf("Marshal = %q, %v", out, err)
	}
	err = yaml.Unmarshal([]byte("d: soon\nz: [1]\n"), &v)
	te, ok := err.(*yaml.TypeError)
	if !ok || len(te.Errors) != 2 ||
		!strings.HasPrefix(te.Errors[0], "line 1: column 4: invalid duration") ||
		!strings.HasPrefix(te.Errors[1], "line 2: column 4: expected a size") {
		t.Errorf("Unmarshal errors = %#v", err)
	}
}
