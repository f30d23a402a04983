package route

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

func names(rs []Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name
	}
	return out
}

func mustNew(t *testing.T, routes []Route) *Table {
	t.Helper()
	tab, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestValidateHost(t *testing.T) {
	const seedMsg = "is not a fully qualified domain name (FQDN); use e.g. servername.contoso.com, or an IP address in brackets like [192.0.2.10]"
	tests := []struct {
		host    string
		kind    error  // nil: valid
		message string // substring of the error
	}{
		{"servername.contoso.com", nil, ""},
		{"servername.contoso.com.", nil, ""},
		{"localhost", nil, ""},
		{"LocalHost.", nil, ""},
		{"192.0.2.10", nil, ""},
		{"[192.0.2.10]", nil, ""},
		{"2001:db8::1", nil, ""},
		{"[IPv6:2001:db8::1]", nil, ""},
		{"[ipv6:::1]", nil, ""},
		{"exch-01.corp.example", nil, ""},
		// The seed's own example of a name that is not an FQDN.
		{"Server Name", ErrNotFQDN, `"Server Name" ` + seedMsg},
		{"exchange", ErrNotFQDN, `"exchange" ` + seedMsg},
		{"exchange.", ErrNotFQDN, seedMsg},
		{"", ErrInvalidHost, "host is empty"},
		{"  ", ErrInvalidHost, "host is empty"},
		{"[2001:db8::1]", ErrInvalidHost, "write an IPv6 address literal as [IPv6:2001:db8::1]"},
		{"[IPv6:192.0.2.1]", ErrInvalidHost, "not a valid IPv6 address literal"},
		{"[192.0.2.300]", ErrInvalidHost, "not a valid IP address literal"},
		{"[192.0.2.1", ErrInvalidHost, "must be enclosed in [ and ]"},
		{"192.0.2.1]", ErrInvalidHost, "must be enclosed in [ and ]"},
		{"exchange.corp.example:25", ErrInvalidHost, "contains a port"},
		{"exchange:587", ErrInvalidHost, "contains a port"},
		{"exch_01.corp.example", ErrInvalidHost, "not a valid host name"},
		{"-exch.corp.example", ErrInvalidHost, "not a valid host name"},
		{"exch..corp.example", ErrInvalidHost, "not a valid host name"},
		{"192.0.2", ErrInvalidHost, "not a valid host name"},
		{"Server Name.corp.example", ErrInvalidHost, "not a valid host name"},
		{strings.Repeat("a", 64) + ".example", ErrInvalidHost, "not a valid host name"},
	}
	for _, tc := range tests {
		err := ValidateHost(tc.host)
		if tc.kind == nil {
			if err != nil {
				t.Errorf("ValidateHost(%q) = %v, want nil", tc.host, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ValidateHost(%q) = nil, want %v", tc.host, tc.kind)
			continue
		}
		if !errors.Is(err, tc.kind) {
			t.Errorf("ValidateHost(%q) = %v, not %v", tc.host, err, tc.kind)
		}
		if !strings.Contains(err.Error(), tc.message) {
			t.Errorf("ValidateHost(%q) = %q, want it to contain %q", tc.host, err, tc.message)
		}
	}
}

// TestSeedStarVersusNet mirrors the seed: with a "*" connector and a
// "*.net" connector, mail to a .net domain takes the second.
func TestSeedStarVersusNet(t *testing.T) {
	tab := mustNew(t, []Route{
		{Name: "internet", Host: "smarthost.contoso.com", AddressSpaces: []string{"*"}},
		{Name: "dotnet", Host: "[192.0.2.10]", AddressSpaces: []string{"*.net"}},
	})
	for rcpt, want := range map[string][]string{
		"user@fabrikam.net":      {"dotnet", "internet"},
		"user@mail.fabrikam.NET": {"dotnet", "internet"},
		"user@fabrikam.com":      {"internet"},
		"user@net":               {"internet"}, // "*.net" covers subdomains of net, not net itself
		"user@fabrikam.network":  {"internet"},
	} {
		if got := names(tab.Candidates(rcpt)); !slices.Equal(got, want) {
			t.Errorf("Candidates(%q) = %q, want %q", rcpt, got, want)
		}
	}
}

// TestSeedCostFailover mirrors the seed: Connector1 (cost 1) and Connector2
// (cost 2) both serve "*"; mail takes Connector1 until it is unavailable,
// then Connector2.
func TestSeedCostFailover(t *testing.T) {
	// Connector2 is listed first so that cost, not order, must decide.
	tab := mustNew(t, []Route{
		{Name: "Connector2", Host: "backup.contoso.com", AddressSpaces: []string{"*"}, Cost: 2},
		{Name: "Connector1", Host: "primary.contoso.com", AddressSpaces: []string{"*"}, Cost: 1},
	})
	rcpts := []string{"a@contoso.com", "b@fabrikam.net"}
	if got := names(tab.Candidates("a@contoso.com")); !slices.Equal(got, []string{"Connector1", "Connector2"}) {
		t.Fatalf("Candidates = %q", got)
	}
	plan := tab.Plan(rcpts)
	if len(plan) != 1 || plan[0].Route.Name != "Connector1" || !slices.Equal(plan[0].Recipients, rcpts) {
		t.Fatalf("Plan = %+v", plan)
	}
	down := make(Down)
	next := tab.Failover(plan[0], down)
	if len(next) != 1 || next[0].Route.Name != "Connector2" || !slices.Equal(next[0].Recipients, rcpts) {
		t.Fatalf("Failover = %+v", next)
	}
	if !down["connector1"] {
		t.Errorf("down = %v, want connector1 marked", down)
	}
	// Later messages in the same run avoid the failed route.
	if p := tab.PlanAvoiding([]string{"c@contoso.com"}, down); p[0].Route.Name != "Connector2" {
		t.Errorf("PlanAvoiding = %+v", p)
	}
	// When Connector2 fails too, nothing is left: unroutable, for the
	// caller to defer.
	last := tab.Failover(next[0], down)
	if len(last) != 1 || !last[0].Unroutable() || !slices.Equal(last[0].Recipients, rcpts) {
		t.Fatalf("Failover = %+v", last)
	}
	if again := tab.Failover(last[0], down); len(again) != 1 || !again[0].Unroutable() {
		t.Fatalf("Failover(unroutable) = %+v", again)
	}
	// A fresh run plans with Connector1 again.
	if p := tab.Plan(rcpts); p[0].Route.Name != "Connector1" {
		t.Errorf("Plan = %+v", p)
	}
}

func TestCandidatesSpecificity(t *testing.T) {
	tab := mustNew(t, []Route{
		{Name: "star", Host: "a.example", AddressSpaces: []string{"*"}},
		{Name: "tld", Host: "b.example", AddressSpaces: []string{"*.com"}},
		{Name: "sub", Host: "c.example", AddressSpaces: []string{"*.contoso.com"}},
		{Name: "subsub", Host: "d.example", AddressSpaces: []string{"*.eu.contoso.com"}},
		{Name: "exact", Host: "e.example", AddressSpaces: []string{"contoso.com", "eu.contoso.com"}},
		{Name: "cheap-star", Host: "f.example", AddressSpaces: []string{"*"}, Cost: 1},
		{Name: "dear-star", Host: "g.example", AddressSpaces: []string{"*"}, Cost: 50},
	})
	tests := []struct {
		rcpt string
		want []string
	}{
		{"u@contoso.com", []string{"exact", "tld", "star", "cheap-star", "dear-star"}},
		{"u@eu.contoso.com", []string{"exact", "sub", "tld", "star", "cheap-star", "dear-star"}},
		{"u@paris.eu.contoso.com", []string{"subsub", "sub", "tld", "star", "cheap-star", "dear-star"}},
		{"u@x.contoso.com", []string{"sub", "tld", "star", "cheap-star", "dear-star"}},
		{"u@fabrikam.com", []string{"tld", "star", "cheap-star", "dear-star"}},
		{"u@fabrikam.org", []string{"star", "cheap-star", "dear-star"}},
		{"U@CONTOSO.COM.", []string{"exact", "tld", "star", "cheap-star", "dear-star"}},
		{"postmaster", []string{"star", "cheap-star", "dear-star"}},
		{"u@[192.0.2.1]", []string{"star", "cheap-star", "dear-star"}},
		{"u@contoso.com.evil.example", []string{"star", "cheap-star", "dear-star"}},
		{"u@notcontoso.com", []string{"tld", "star", "cheap-star", "dear-star"}},
	}
	for _, tc := range tests {
		if got := names(tab.Candidates(tc.rcpt)); !slices.Equal(got, tc.want) {
			t.Errorf("Candidates(%q) = %q, want %q", tc.rcpt, got, tc.want)
		}
	}
}

func TestCandidatesNoMatch(t *testing.T) {
	tab := mustNew(t, []Route{{Name: "corp", Host: "exch.corp.example", AddressSpaces: []string{"corp.example"}}})
	if got := tab.Candidates("u@other.example"); got != nil {
		t.Errorf("Candidates = %+v, want nil", got)
	}
	plan := tab.Plan([]string{"a@other.example", "b@corp.example", "c@other.example"})
	if len(plan) != 2 || plan[0].Route.Name != "corp" || !slices.Equal(plan[0].Recipients, []string{"b@corp.example"}) ||
		!plan[1].Unroutable() || !slices.Equal(plan[1].Recipients, []string{"a@other.example", "c@other.example"}) {
		t.Fatalf("Plan = %+v", plan)
	}
}

func TestPlanSplitsOneMessage(t *testing.T) {
	tab := mustNew(t, []Route{
		{Name: "hq", Host: "exch-hq.corp.example", AddressSpaces: []string{"corp.example"}},
		{Name: "branch", Host: "exch-br.corp.example", AddressSpaces: []string{"branch.corp.example", "*.branch.corp.example"}},
		{Name: "fallback", Host: "[192.0.2.25]", Port: 2525, Cost: 5},
	})
	rcpts := []string{"a@corp.example", "b@branch.corp.example", "c@corp.example", "d@x.branch.corp.example", "e@elsewhere.example"}
	plan := tab.Plan(rcpts)
	want := []struct {
		route string
		rcpts []string
	}{
		{"hq", []string{"a@corp.example", "c@corp.example"}},
		{"branch", []string{"b@branch.corp.example", "d@x.branch.corp.example"}},
		{"fallback", []string{"e@elsewhere.example"}},
	}
	if len(plan) != len(want) {
		t.Fatalf("Plan = %+v", plan)
	}
	total := 0
	for i, w := range want {
		if plan[i].Route.Name != w.route || !slices.Equal(plan[i].Recipients, w.rcpts) {
			t.Errorf("group %d = %s %q, want %s %q", i, plan[i].Route.Name, plan[i].Recipients, w.route, w.rcpts)
		}
		total += len(plan[i].Recipients)
	}
	if total != len(rcpts) {
		t.Errorf("plan holds %d recipients, want %d", total, len(rcpts))
	}
	// The branch server fails: its recipients fall back to the "*" route
	// and join nobody else's group.
	down := make(Down)
	next := tab.Failover(plan[1], down)
	if len(next) != 1 || next[0].Route.Name != "fallback" || !slices.Equal(next[0].Recipients, want[1].rcpts) {
		t.Fatalf("Failover = %+v", next)
	}
	if next[0].Route.Addr() != "192.0.2.25:2525" {
		t.Errorf("Addr = %q", next[0].Route.Addr())
	}
}

func TestFailoverSplitsByNextChoice(t *testing.T) {
	tab := mustNew(t, []Route{
		{Name: "all", Host: "a.corp.example", AddressSpaces: []string{"corp.example", "corp2.example"}},
		{Name: "only2", Host: "b.corp.example", AddressSpaces: []string{"corp2.example"}, Cost: 2},
		{Name: "any", Host: "c.corp.example", Cost: 9},
	})
	plan := tab.Plan([]string{"x@corp.example", "y@corp2.example"})
	if len(plan) != 1 || plan[0].Route.Name != "all" {
		t.Fatalf("Plan = %+v", plan)
	}
	next := tab.Failover(plan[0], nil)
	if len(next) != 2 || next[0].Route.Name != "any" || next[1].Route.Name != "only2" ||
		!slices.Equal(next[0].Recipients, []string{"x@corp.example"}) || !slices.Equal(next[1].Recipients, []string{"y@corp2.example"}) {
		t.Fatalf("Failover = %+v", next)
	}
}

func TestCostTiesKeepConfigOrder(t *testing.T) {
	tab := mustNew(t, []Route{
		{Name: "b", Host: "b.example", Cost: 3},
		{Name: "a", Host: "a.example", Cost: 3},
		{Name: "c", Host: "c.example"}, // default cost 1
	})
	if got := names(tab.Candidates("u@x.example")); !slices.Equal(got, []string{"c", "b", "a"}) {
		t.Errorf("Candidates = %q", got)
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		errs   []string
	}{
		{"none", nil, []string{"no route"}},
		{"missing name", []Route{{Host: "a.example"}}, []string{"route 1: name is required"}},
		{"spaced name", []Route{{Name: " a", Host: "a.example"}}, []string{"leading or trailing spaces"}},
		{"duplicate name", []Route{{Name: "A", Host: "a.example"}, {Name: "a", Host: "b.example"}}, []string{`route "a": name is used by another route`}},
		{"bad host", []Route{{Name: "a", Host: "exchange"}}, []string{`route "a": "exchange" is not a fully qualified domain name (FQDN)`}},
		{"bad port", []Route{{Name: "a", Host: "a.example", Port: 70000}}, []string{"port 70000 is out of range"}},
		{"negative port", []Route{{Name: "a", Host: "a.example", Port: -1}}, []string{"port -1 is out of range"}},
		{"bad cost", []Route{{Name: "a", Host: "a.example", Cost: 101}}, []string{"cost 101 is out of range 1..100"}},
		{"negative cost", []Route{{Name: "a", Host: "a.example", Cost: -2}}, []string{"cost -2 is out of range"}},
		{"bad spaces", []Route{{Name: "a", Host: "a.example", AddressSpaces: []string{"", "**", "con*toso.com", "*contoso.com", "net", "a_b.example"}}},
			[]string{`address space ""`, `address space "**"`, `address space "con*toso.com"`, `address space "*contoso.com"`,
				`address space "net": a single label matches no domain; for a top-level domain write *.net`, `address space "a_b.example": label "a_b": "_" is not allowed`}},
		{"duplicate space", []Route{{Name: "a", Host: "a.example", AddressSpaces: []string{"Contoso.com", "contoso.com."}}}, []string{`address space "contoso.com." is listed twice`}},
		{"many problems at once", []Route{{Name: "a", Host: "x", Port: -1, Cost: 200}}, []string{"FQDN", "port -1", "cost 200"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := New(tc.routes)
			if err == nil {
				t.Fatalf("New = %+v, want an error", tab)
			}
			for _, s := range tc.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q\nwant it to contain %q", err, s)
				}
			}
		})
	}
}

func TestNewNormalises(t *testing.T) {
	in := []Route{{Name: "Exchange", Host: "[IPv6:2001:db8::25]", AddressSpaces: []string{"Contoso.COM.", "*.NET"}}}
	tab := mustNew(t, in)
	got := tab.Routes()
	want := Route{Name: "Exchange", Host: "[IPv6:2001:db8::25]", Port: 25, Cost: 1, AddressSpaces: []string{"contoso.com", "*.net"}}
	if len(got) != 1 || got[0].Name != want.Name || got[0].Port != want.Port || got[0].Cost != want.Cost || !slices.Equal(got[0].AddressSpaces, want.AddressSpaces) {
		t.Fatalf("Routes = %+v, want %+v", got, want)
	}
	if got[0].Addr() != "[2001:db8::25]:25" {
		t.Errorf("Addr = %q", got[0].Addr())
	}
	// The caller's slice is untouched and results are copies.
	if in[0].AddressSpaces[0] != "Contoso.COM." {
		t.Errorf("input modified: %q", in[0].AddressSpaces)
	}
	got[0].AddressSpaces[0] = "changed"
	if r, ok := tab.Lookup("exchange"); !ok || r.AddressSpaces[0] != "contoso.com" {
		t.Errorf("Lookup = %+v, %v", r, ok)
	}
	if _, ok := tab.Lookup("nope"); ok {
		t.Error("Lookup(nope) found a route")
	}
	// Empty address spaces mean "*".
	tab = mustNew(t, []Route{{Name: "x", Host: "localhost"}})
	if r := tab.Routes()[0]; !slices.Equal(r.AddressSpaces, []string{"*"}) || r.Addr() != "localhost:25" {
		t.Errorf("Routes = %+v", r)
	}
}

func TestTableConcurrentUse(t *testing.T) {
	tab := mustNew(t, []Route{
		{Name: "a", Host: "a.example", AddressSpaces: []string{"*.net"}},
		{Name: "b", Host: "b.example"},
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if p := tab.Plan([]string{"x@y.net", "z@w.org"}); len(p) != 2 {
					t.Errorf("Plan = %+v", p)
					return
				}
				tab.Failover(Group{Route: &Route{Name: "a"}, Recipients: []string{"x@y.net"}}, make(Down))
			}
		})
	}
	wg.Wait()
}

func BenchmarkPlan(b *testing.B) {
	routes := []Route{{Name: "star", Host: "a.example"}}
	for i := range 20 {
		routes = append(routes, Route{Name: "r" + string(rune('a'+i)), Host: "h.example", AddressSpaces: []string{"d" + string(rune('a'+i)) + ".example", "*.sub" + string(rune('a'+i)) + ".example"}, Cost: i%3 + 1})
	}
	tab, err := New(routes)
	if err != nil {
		b.Fatal(err)
	}
	rcpts := []string{"a@da.example", "b@x.subc.example", "c@other.example", "d@dq.example"}
	b.ReportAllocs()
	for b.Loop() {
		tab.Plan(rcpts)
	}
}
