package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as a Go duration string
// ("90s", "10m", "1h30m") or with a day suffix ("7d", "1d12h"). A bare
// number is rejected because its unit would be a guess; "0" is accepted.
type Duration time.Duration

// ParseDuration parses the Duration syntax: time.ParseDuration plus a
// leading whole-day component "<n>d" (a day is 24h, no calendar rules).
func ParseDuration(s string) (time.Duration, error) {
	d, why := parseDuration(s)
	if why != "" {
		return 0, fmt.Errorf("invalid duration %q: %s", s, why)
	}
	return d, nil
}

// parseDuration returns the reason for a failure separately from the input,
// so YAML errors can explain the problem without echoing the value.
func parseDuration(s string) (time.Duration, string) {
	const hint = "use a number and unit such as 90s, 10m, 2h or 7d"
	body := strings.TrimSpace(s)
	neg := false
	if body != "" && (body[0] == '-' || body[0] == '+') {
		neg = body[0] == '-'
		body = body[1:]
	}
	if body == "" {
		return 0, hint
	}
	var total time.Duration
	if i := strings.IndexByte(body, 'd'); i >= 0 {
		// No Go duration unit contains a 'd', so any 'd' ends a day count.
		if !isDigits(body[:i]) {
			return 0, "days must be a whole number, e.g. 7d or 1d12h"
		}
		days, err := strconv.ParseInt(body[:i], 10, 64)
		if err != nil || days > int64(math.MaxInt64/int64(24*time.Hour)) {
			return 0, "too large"
		}
		total = time.Duration(days) * 24 * time.Hour
		body = body[i+1:]
		if body == "" {
			if neg {
				total = -total
			}
			return total, ""
		}
	}
	if isDigits(body) && strings.Trim(body, "0") != "" {
		return 0, "a unit is required, e.g. 60s or 10m"
	}
	if body[0] == '-' || body[0] == '+' {
		return 0, "put the sign only at the start"
	}
	rest, err := time.ParseDuration(body)
	if err != nil {
		if strings.Contains(err.Error(), "overflow") {
			return 0, "too large"
		}
		return 0, hint
	}
	if rest > time.Duration(math.MaxInt64)-total {
		return 0, "too large"
	}
	total += rest
	if neg {
		total = -total
	}
	return total, ""
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// UnmarshalYAML implements yaml.Unmarshaler. Problems are reported as
// *yaml.TypeError so decoding continues and every problem is collected.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a duration such as 60s, 10m or 7d")
	}
	v, why := parseDuration(n.Value)
	if why != "" {
		return typeErr(n, "invalid duration: "+why)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in the form ParseDuration reads.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats d compactly: "10m", "1h30m", "7d".
func (d Duration) String() string { return formatDuration(time.Duration(d)) }

// formatDuration prints whole days as "Nd" and drops zero trailing units,
// so messages read "10m" rather than "10m0s".
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	sign := ""
	if d < 0 {
		if d == math.MinInt64 {
			return d.String()
		}
		sign, d = "-", -d
	}
	const day = 24 * time.Hour
	var b strings.Builder
	b.WriteString(sign)
	if d >= day && d%day == 0 {
		fmt.Fprintf(&b, "%dd", d/day)
		return b.String()
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	b.WriteString(s)
	return b.String()
}

// Size is a byte count written in YAML as a plain whole number of bytes or
// with a unit: B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers
// of 1024). Units are case-insensitive and may follow a space: "1GiB",
// "500 MB". Fractions and negative sizes are rejected.
type Size int64

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// ParseSize parses the Size syntax.
func ParseSize(s string) (Size, error) {
	z, why := parseSize(s)
	if why != "" {
		return 0, fmt.Errorf("invalid size %q: %s", s, why)
	}
	return z, nil
}

func parseSize(s string) (Size, string) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, "use a whole number of bytes or a number and unit, e.g. 1GiB or 500MB"
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, "too large"
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	if unit == "" {
		return Size(n), ""
	}
	for _, u := range sizeUnits {
		if unit == u.name {
			if n > math.MaxInt64/u.mult {
				return 0, "too large"
			}
			return Size(n * u.mult), ""
		}
	}
	return 0, "unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB; fractions are not accepted)"
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a size such as 1GiB, 500MB or a number of bytes")
	}
	v, why := parseSize(n.Value)
	if why != "" {
		return typeErr(n, "invalid size: "+why)
	}
	*z = v
	return nil
}

// MarshalYAML writes the size in the form ParseSize reads.
func (z Size) MarshalYAML() (any, error) { return z.String(), nil }

// String formats z with the largest binary unit that divides it exactly:
// "1GiB", "1536KiB", "1000B".
func (z Size) String() string {
	n := int64(z)
	if n != 0 {
		for _, u := range []struct {
			name string
			mult int64
		}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
			if n%u.mult == 0 {
				return strconv.FormatInt(n/u.mult, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// intValue is an int that accepts only YAML integers: yaml.v3 would
// silently truncate 25.5 to 25 for a plain int.
type intValue int

func (v *intValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return typeErr(n, "expected a whole number")
	}
	var i int
	if err := n.Decode(&i); err != nil {
		return typeErr(n, "expected a whole number that fits in an int")
	}
	*v = intValue(i)
	return nil
}

// addrList is a list of addresses that also accepts a single scalar, so
// "deliver_to: a@corp.example" means the same as "deliver_to: [a@corp.example]".
type addrList []string

func (l *addrList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = addrList{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(addrList, 0, len(n.Content))
		var msgs []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				msgs = append(msgs, fmt.Sprintf("line %d: column %d: expected an address", c.Line, c.Column))
				continue
			}
			out = append(out, c.Value)
		}
		if len(msgs) > 0 {
			return &yaml.TypeError{Errors: msgs}
		}
		*l = out
		return nil
	default:
		return typeErr(n, "expected an address or a list of addresses")
	}
}

// typeErr reports a problem with node n the way yaml.v3 reports its own
// type errors ("line N: ..."), so the decoder keeps going, and adds the
// column so the message can be attached to exactly this node's path.
func typeErr(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: column %d: %s", n.Line, n.Column, msg)}}
}
