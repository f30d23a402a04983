package templatetest

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/popconnector/popconnector/internal/metrics"
)

var updateDashboard = flag.Bool("update-dashboard", false, "rewrite template.yaml's DashboardBody from infra/dashboard.json (make dashboard-sync)")

func dashboardSource(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "infra", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dashboardBodyNode finds Resources.Dashboard.Properties.DashboardBody in
// the YAML as written.
func dashboardBodyNode(t *testing.T, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	n := doc.Content[0]
	for _, key := range []string{"Resources", "Dashboard", "Properties", "DashboardBody"} {
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			t.Fatalf("template.yaml has no %s on the path Resources.Dashboard.Properties.DashboardBody", key)
		}
		n = next
	}
	return n
}

// TestDashboardBodyIsTheSource: the template carries infra/dashboard.json
// verbatim inside Fn::Sub. With -update-dashboard it copies it there.
func TestDashboardBodyIsTheSource(t *testing.T) {
	tp := load(t)
	src := dashboardSource(t)
	if *updateDashboard {
		text, err := replaceDashboardBody(tp.text, src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tp.path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		tp.text = text
		t.Logf("rewrote the DashboardBody of %s", tp.path)
	}
	n := dashboardBodyNode(t, tp.text)
	if n.Tag != "!Sub" {
		t.Errorf("DashboardBody has tag %q, want !Sub (it names the function, alarms and namespace)", n.Tag)
	}
	if n.Style&yaml.LiteralStyle == 0 {
		t.Error("DashboardBody should be a literal block (|) so the JSON stays readable")
	}
	if strings.TrimRight(n.Value, "\n") != strings.TrimRight(src, "\n") {
		t.Error("template.yaml's DashboardBody differs from infra/dashboard.json; run `make dashboard-sync`")
	}
}

// replaceDashboardBody swaps the lines of the DashboardBody block scalar
// for src, indented two more than the key.
func replaceDashboardBody(text, src string) (string, error) {
	lines := strings.Split(text, "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == "DashboardBody: !Sub |" {
			if start >= 0 {
				return "", fmt.Errorf("two DashboardBody blocks")
			}
			start = i
		}
	}
	if start < 0 {
		return "", fmt.Errorf("no line `DashboardBody: !Sub |` in template.yaml")
	}
	indent := strings.Repeat(" ", len(lines[start])-len(strings.TrimLeft(lines[start], " "))+2)
	end := start + 1
	for end < len(lines) && (strings.TrimSpace(lines[end]) == "" || strings.HasPrefix(lines[end], indent)) {
		end++
	}
	for end > start+1 && strings.TrimSpace(lines[end-1]) == "" {
		end-- // blank lines after the block belong to what follows
	}
	var body []string
	for _, l := range strings.Split(strings.TrimRight(src, "\n"), "\n") {
		if l == "" {
			body = append(body, "")
		} else {
			body = append(body, indent+l)
		}
	}
	out := append(append(append([]string{}, lines[:start+1]...), body...), lines[end:]...)
	return strings.Join(out, "\n"), nil
}

// dashboard is infra/dashboard.json with the Fn::Sub variables replaced by
// test values.
type dashboard struct {
	Widgets []widget `json:"widgets"`
}

type widget struct {
	Type       string         `json:"type"`
	X          *float64       `json:"x"`
	Y          *float64       `json:"y"`
	Width      *float64       `json:"width"`
	Height     *float64       `json:"height"`
	Properties map[string]any `json:"properties"`
}

func (w widget) title() string {
	if s, ok := w.Properties["title"].(string); ok {
		return s
	}
	return w.Type
}

// dashVars are the values the test substitutes for each ${...}.
func dashVars(t *testing.T, tp *tmpl) map[string]string {
	t.Helper()
	vals := tp.paramValues(t, defaults)
	v := map[string]string{}
	for k, p := range pseudo {
		v[k] = scalarString(p)
	}
	for k, p := range vals {
		v[k] = scalarString(p)
	}
	for _, id := range tp.resourceIDs("") {
		v[id] = "popconn-test-" + id
		if tp.resourceType(id) == "AWS::CloudWatch::Alarm" {
			v[id+".Arn"] = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:popconn-test-" + id
		}
	}
	return v
}

func loadDashboard(t *testing.T) (*dashboard, *tmpl) {
	t.Helper()
	tp := load(t)
	src := dashboardSource(t)
	vars := dashVars(t, tp)
	var unknown []string
	subst := subVar.ReplaceAllStringFunc(src, func(m string) string {
		v, ok := vars[m[2:len(m)-1]]
		if !ok {
			unknown = append(unknown, m)
		}
		return v
	})
	if len(unknown) > 0 {
		t.Errorf("dashboard.json uses ${...} that are neither parameters, resources, alarm ARNs nor pseudo parameters: %v", unknown)
	}
	var raw any
	if err := json.Unmarshal([]byte(src), &raw); err != nil {
		t.Fatalf("infra/dashboard.json is not JSON before substitution: %v", err)
	}
	var d dashboard
	if err := json.Unmarshal([]byte(subst), &d); err != nil {
		t.Fatalf("dashboard is not JSON after substitution: %v", err)
	}
	if len(d.Widgets) == 0 {
		t.Fatal("dashboard has no widgets")
	}
	return &d, tp
}

// TestDashboardLayout: every widget sits inside the 24-column grid and no
// two overlap (CloudWatch would move them).
func TestDashboardLayout(t *testing.T) {
	d, _ := loadDashboard(t)
	type rect struct {
		x, y, w, h int
		name       string
	}
	var rects []rect
	for i, w := range d.Widgets {
		name := fmt.Sprintf("widget %d (%s)", i, w.title())
		if !contains([]string{"metric", "text", "log", "alarm"}, w.Type) {
			t.Errorf("%s: type %q", name, w.Type)
		}
		if w.X == nil || w.Y == nil || w.Width == nil || w.Height == nil {
			t.Errorf("%s: x, y, width and height must all be set", name)
			continue
		}
		r := rect{int(*w.X), int(*w.Y), int(*w.Width), int(*w.Height), name}
		if float64(r.x) != *w.X || float64(r.y) != *w.Y || float64(r.w) != *w.Width || float64(r.h) != *w.Height {
			t.Errorf("%s: position and size must be integers", name)
		}
		if r.x < 0 || r.y < 0 || r.w < 1 || r.h < 1 || r.h > 1000 {
			t.Errorf("%s: x=%d y=%d width=%d height=%d out of range", name, r.x, r.y, r.w, r.h)
		}
		if r.x+r.w > 24 {
			t.Errorf("%s: x+width = %d, beyond the 24-column grid", name, r.x+r.w)
		}
		if (w.Type == "metric" || w.Type == "log") && w.Properties["region"] == nil {
			t.Errorf("%s: no region", name)
		}
		for _, o := range rects {
			if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
				t.Errorf("%s overlaps %s", name, o.name)
			}
		}
		rects = append(rects, r)
	}
}

// dashMetric is one metric a widget shows.
type dashMetric struct {
	widget    string
	namespace string
	name      string
	dims      []string // dimension names
	search    bool     // from a SEARCH expression
	stat      string
}

var searchExpr = regexp.MustCompile(`SEARCH\('\{([^}]*)\}\s+MetricName="([^"]+)"'\s*,\s*'([A-Za-z0-9.]+)'`)

// dashboardMetrics lists the metrics of every metric widget: rows of
// [namespace, name, dim, value, ..., {options}] with "." repeating the row
// above, and SEARCH expressions.
func dashboardMetrics(t *testing.T, d *dashboard) []dashMetric {
	t.Helper()
	var out []dashMetric
	for _, w := range d.Widgets {
		if w.Type != "metric" {
			continue
		}
		rows, ok := w.Properties["metrics"].([]any)
		if !ok || len(rows) == 0 {
			t.Errorf("widget %s: no metrics", w.title())
			continue
		}
		ids := map[string]bool{}
		var prev []string
		var exprs []string
		wstat, _ := w.Properties["stat"].(string)
		for _, row := range rows {
			items, _ := row.([]any)
			var pos []string
			var opts map[string]any
			for _, it := range items {
				switch x := it.(type) {
				case string:
					pos = append(pos, x)
				case map[string]any:
					opts = x
				default:
					t.Errorf("widget %s: metric row item %v", w.title(), it)
				}
			}
			if id, ok := opts["id"].(string); ok {
				ids[id] = true
			}
			if expr, ok := opts["expression"].(string); ok {
				if len(pos) != 0 {
					t.Errorf("widget %s: an expression row has other items", w.title())
				}
				m := searchExpr.FindStringSubmatch(expr)
				if m == nil {
					exprs = append(exprs, expr)
					continue
				}
				schema := strings.Split(m[1], ",")
				out = append(out, dashMetric{widget: w.title(), namespace: schema[0], name: m[2], dims: schema[1:], search: true, stat: m[3]})
				continue
			}
			for i := range pos {
				if pos[i] == "." {
					if i >= len(prev) {
						t.Errorf("widget %s: \".\" with nothing above it", w.title())
						continue
					}
					pos[i] = prev[i]
				}
			}
			if len(pos) < 2 || len(pos)%2 != 0 {
				t.Errorf("widget %s: metric row %v is not namespace, name, then dimension pairs", w.title(), items)
				continue
			}
			prev = pos
			dm := dashMetric{widget: w.title(), namespace: pos[0], name: pos[1], stat: wstat}
			for i := 2; i < len(pos); i += 2 {
				dm.dims = append(dm.dims, pos[i])
			}
			if s, ok := opts["stat"].(string); ok {
				dm.stat = s
			}
			out = append(out, dm)
		}
		// Metric math may only use ids defined in the same widget.
		for _, e := range exprs {
			for _, tok := range regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`).FindAllString(e, -1) {
				if tok == strings.ToUpper(tok) {
					continue // a function: SUM, METRICS, ...
				}
				if !ids[tok] {
					t.Errorf("widget %s: expression %q uses %q, which no metric in the widget has as id", w.title(), e, tok)
				}
			}
		}
	}
	return out
}

// TestDashboardMetricsAreEmitted: every metric in the poller's namespace
// is one internal/metrics emits, with the dimensions it emits it with.
func TestDashboardMetricsAreEmitted(t *testing.T) {
	d, tp := loadDashboard(t)
	ns := scalarString(tp.paramValues(t, defaults)["MetricsNamespace"])
	var ours int
	for _, m := range dashboardMetrics(t, d) {
		if m.namespace != ns {
			if !strings.HasPrefix(m.namespace, "AWS/") {
				t.Errorf("widget %s: namespace %q is neither the poller's nor AWS's", m.widget, m.namespace)
			}
			continue
		}
		ours++
		if m.stat == "" {
			t.Errorf("widget %s: %s has no statistic", m.widget, m.name)
		}
		if err := emittedWith(m.name, m.dims); err != nil {
			t.Errorf("widget %s: %v", m.widget, err)
		}
	}
	if ours == 0 {
		t.Error("the dashboard shows none of the poller's metrics")
	}
}

// emittedWith reports whether internal/metrics emits name with exactly the
// dimension names dims.
func emittedWith(name string, dims []string) error {
	m, ok := metrics.Lookup(name)
	if !ok {
		return fmt.Errorf("metric %s is not emitted (not in metrics.Names)", name)
	}
	switch {
	case len(dims) == 1 && dims[0] == metrics.DimensionMailbox:
		if m.Scope != metrics.ScopePoll {
			return fmt.Errorf("metric %s is not emitted per mailbox", name)
		}
	case len(dims) == 0:
		if !m.Rollup && m.Scope != metrics.ScopeInvocation {
			return fmt.Errorf("metric %s is emitted only per mailbox; there is no series without dimensions", name)
		}
	default:
		return fmt.Errorf("metric %s: dimensions %v are never emitted", name, dims)
	}
	return nil
}

// TestDashboardAWSMetricsExist checks the AWS metrics against the
// specification's metric list.
func TestDashboardAWSMetricsExist(t *testing.T) {
	sp := loadSpec(t)
	d, _ := loadDashboard(t)
	n := 0
	for _, m := range dashboardMetrics(t, d) {
		if !strings.HasPrefix(m.namespace, "AWS/") {
			continue
		}
		n++
		if err := sp.awsMetricExists(m.namespace, m.name, m.dims); err != nil {
			t.Errorf("widget %s: %v", m.widget, err)
		}
	}
	if n == 0 {
		t.Error("no AWS metric found on the dashboard")
	}
}

// TestDashboardShowsWhatOperatorsNeed: the views the deployment promises.
func TestDashboardShowsWhatOperatorsNeed(t *testing.T) {
	d, tp := loadDashboard(t)
	ns := scalarString(tp.paramValues(t, defaults)["MetricsNamespace"])
	ms := dashboardMetrics(t, d)
	has := func(namespace, name string, perMailbox bool) bool {
		for _, m := range ms {
			if m.namespace == namespace && m.name == name && (!perMailbox || (len(m.dims) == 1 && m.dims[0] == metrics.DimensionMailbox)) {
				return true
			}
		}
		return false
	}
	for _, want := range []struct {
		what           string
		namespace      string
		name           string
		perMailbox     bool
		namespaceIsOur bool
	}{
		{"throughput per mailbox", ns, "MessagesDelivered", true, true},
		{"failures per mailbox", ns, "MailboxErrors", true, true},
		{"oldest undelivered age", ns, "OldestUndeliveredAge", true, true},
		{"rejections", ns, "MessagesRejected", false, true},
		{"duration vs timeout", "AWS/Lambda", "Duration", false, false},
		{"Lambda errors", "AWS/Lambda", "Errors", false, false},
		{"Lambda throttles", "AWS/Lambda", "Throttles", false, false},
	} {
		if !has(want.namespace, want.name, want.perMailbox) {
			t.Errorf("no widget shows %s (%s %s)", want.what, want.namespace, want.name)
		}
	}
	if !strings.Contains(dashboardSource(t), "${FunctionTimeout}") {
		t.Error("the duration widget does not relate the duration to the FunctionTimeout parameter")
	}
	// The alarm widget lists every alarm, and only alarms.
	alarms := map[string]bool{}
	for _, id := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
		alarms[id] = false
	}
	for _, w := range d.Widgets {
		if w.Type != "alarm" {
			continue
		}
		list, _ := w.Properties["alarms"].([]any)
		for _, a := range list {
			s := scalarString(a)
			id := strings.TrimPrefix(s, "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:popconn-test-")
			if _, ok := alarms[id]; !ok || id == s {
				t.Errorf("alarm widget lists %q, which is not an alarm of the template", s)
				continue
			}
			alarms[id] = true
		}
	}
	for id, shown := range alarms {
		if !shown {
			t.Errorf("alarm %s is not on the dashboard's alarm widget", id)
		}
	}
}
