package templatetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/popconnector/popconnector/internal/connector"
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
// the YAML as written: a !Sub of [body, variables].
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
// verbatim as the body of a !Sub [body, variables]. With -update-dashboard
// it copies it there.
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
	if n.Tag != "!Sub" || n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
		t.Fatalf("DashboardBody is %s %v, want !Sub [body, variables] (it names the functions, alarms and namespace; the variables stand in for the fanout-only resources)", n.Tag, n.Kind)
	}
	body := n.Content[0]
	if body.Style&yaml.LiteralStyle == 0 {
		t.Error("the DashboardBody should be a literal block (- |) so the JSON stays readable")
	}
	if strings.TrimRight(body.Value, "\n") != strings.TrimRight(src, "\n") {
		t.Error("template.yaml's DashboardBody differs from infra/dashboard.json; run `make dashboard-sync`")
	}
}

// replaceDashboardBody swaps the lines of the DashboardBody's block
// scalar (the "- |" under "DashboardBody: !Sub") for src, indented two
// more than the dash.
func replaceDashboardBody(text, src string) (string, error) {
	lines := strings.Split(text, "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == "DashboardBody: !Sub" {
			if start >= 0 {
				return "", fmt.Errorf("two DashboardBody blocks")
			}
			start = i + 1
		}
	}
	if start < 0 || start >= len(lines) || strings.TrimSpace(lines[start]) != "- |" {
		return "", fmt.Errorf("no lines `DashboardBody: !Sub` and `- |` in template.yaml")
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

// dashboardModes are the parameter sets the dashboard is checked under:
// it must make sense in both modes.
var dashboardModes = []string{"defaults", "fanout"}

// loadDashboard is the dashboard as CloudFormation would render it for
// the parameter set: the template's !Sub resolved (parameters, resources
// as ref(X) and getatt(X.Attr), the variables for that mode).
func loadDashboard(t *testing.T, set string) (*dashboard, *tmpl, *resolved) {
	t.Helper()
	tp := load(t)
	src := dashboardSource(t)
	var raw any
	if err := json.Unmarshal([]byte(src), &raw); err != nil {
		t.Fatalf("infra/dashboard.json is not JSON before substitution: %v", err)
	}
	// Every ${...} names a variable of the !Sub, a parameter, a pseudo
	// parameter, a resource or an attribute of one.
	sub, _ := tp.props("Dashboard")["DashboardBody"].(map[string]any)["Fn::Sub"].([]any)
	if len(sub) != 2 {
		t.Fatalf("DashboardBody is not a !Sub [body, variables]")
	}
	vars, _ := sub[1].(map[string]any)
	var unknown []string
	for _, m := range subVar.FindAllStringSubmatch(src, -1) {
		name := m[1]
		id, _, hasAttr := strings.Cut(name, ".")
		_, isVar := vars[name]
		_, isParam := tp.section("Parameters")[name]
		_, isRes := tp.section("Resources")[id]
		if !isVar && !isParam && !isPseudo(name) && !(isRes && (hasAttr || tp.resourceCondition(id) == "")) {
			unknown = append(unknown, m[0])
		}
		if isRes && tp.resourceCondition(id) != "" {
			t.Errorf("dashboard.json uses %s of %s, which exists only under %s; use a variable of the !Sub", m[0], id, tp.resourceCondition(id))
		}
	}
	if len(unknown) > 0 {
		t.Errorf("dashboard.json uses ${...} that are neither variables, parameters, resources nor pseudo parameters: %v", unknown)
	}
	for name := range vars {
		if !strings.Contains(src, "${"+name+"}") {
			t.Errorf("the DashboardBody variable %s is not used", name)
		}
	}
	r := tp.resolve(t, paramSet(set))
	body, ok := r.props("Dashboard")["DashboardBody"].(string)
	if !ok {
		t.Fatalf("DashboardBody does not resolve to a string")
	}
	var d dashboard
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("dashboard is not JSON after substitution: %v", err)
	}
	if len(d.Widgets) == 0 {
		t.Fatal("dashboard has no widgets")
	}
	return &d, tp, r
}

// TestDashboardLayout: every widget sits inside the 24-column grid and no
// two overlap (CloudWatch would move them).
func TestDashboardLayout(t *testing.T) {
	d, _, _ := loadDashboard(t, "defaults")
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
		for k, v := range w.Properties {
			if _, isNum := v.(float64); k == "period" && !isNum {
				t.Errorf("%s: period %v is not a number", name, v)
			}
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
	dims      []string       // dimension names
	values    map[string]any // dimension values
	search    bool           // from a SEARCH expression
	stat      string
	// insightRule is the rule an INSIGHT_RULE_METRIC expression names,
	// resolved (getatt(Rule.RuleName)); name is then its metric.
	insightRule string
}

var searchExpr = regexp.MustCompile(`SEARCH\('\{([^}]*)\}\s+MetricName="([^"]+)"'\s*,\s*'([A-Za-z0-9.]+)'`)

// dashboardMetrics lists the metrics of every metric widget: rows of
// [namespace, name, dim, value, ..., {options}] with "." repeating the row
// above, SEARCH and INSIGHT_RULE_METRIC expressions.
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
				if m := insightExpr.FindStringSubmatch(expr); m != nil {
					out = append(out, dashMetric{widget: w.title(), name: m[2], insightRule: m[1], stat: m[2]})
					continue
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
			if len(pos) > 0 && pos[0] == "..." {
				t.Errorf("widget %s: \"...\" rows are not checked; write the row out", w.title())
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
			dm := dashMetric{widget: w.title(), namespace: pos[0], name: pos[1], stat: wstat, values: map[string]any{}}
			for i := 2; i < len(pos); i += 2 {
				dm.dims = append(dm.dims, pos[i])
				dm.values[pos[i]] = pos[i+1]
			}
			if s, ok := opts["stat"].(string); ok {
				dm.stat = s
			}
			out = append(out, dm)
		}
		// Metric math may only use ids defined in the same widget.
		for _, e := range exprs {
			for _, tok := range exprIdentifiers(e) {
				if !ids[tok] {
					t.Errorf("widget %s: expression %q uses %q, which no metric in the widget has as id", w.title(), e, tok)
				}
			}
		}
	}
	return out
}

// TestDashboardMetricsAreEmitted: every metric in the poller's namespace
// is one internal/metrics emits by default, without dimensions (the
// per-mailbox series exist only with PerMailboxMetrics); every
// INSIGHT_RULE_METRIC names a rule of the template.
func TestDashboardMetricsAreEmitted(t *testing.T) {
	for _, mode := range dashboardModes {
		t.Run(mode, func(t *testing.T) {
			d, tp, r := loadDashboard(t, mode)
			ns := scalarString(r.vals["MetricsNamespace"])
			var ours int
			for _, m := range dashboardMetrics(t, d) {
				if m.insightRule != "" {
					id, ok := strings.CutSuffix(strings.TrimPrefix(m.insightRule, "getatt("), ".RuleName)")
					if !ok || tp.resourceType(id) != "AWS::CloudWatch::InsightRule" {
						t.Errorf("widget %s: INSIGHT_RULE_METRIC of %q, no Contributor Insights rule of the template", m.widget, m.insightRule)
					}
					if !contains(insightMetrics, m.name) {
						t.Errorf("widget %s: INSIGHT_RULE_METRIC metric %q", m.widget, m.name)
					}
					continue
				}
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
				if len(m.dims) != 0 {
					t.Errorf("widget %s: %s with dimensions %v; by default (PerMailboxMetrics false) no series has any", m.widget, m.name, m.dims)
				}
				if err := emittedWith(m.name, m.dims); err != nil {
					t.Errorf("widget %s: %v", m.widget, err)
				}
			}
			if ours == 0 {
				t.Error("the dashboard shows none of the poller's metrics")
			}
		})
	}
}

// emittedWith reports whether internal/metrics emits name with exactly the
// dimension names dims (Mailbox only with PerMailboxMetrics).
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
			return fmt.Errorf("metric %s is emitted only per mailbox (with PerMailboxMetrics); there is no series without dimensions", name)
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
	d, _, _ := loadDashboard(t, "fanout")
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

// logFields lists the fields a Logs Insights query reads from the log
// lines: its words outside string literals that start with a capital
// letter (the poll line's properties are CamelCase; commands, functions
// and the aliases the query defines are lower case, @fields are CloudWatch's).
func logFields(query string) []string {
	var out []string
	for _, tok := range regexp.MustCompile(`@?[A-Za-z_][A-Za-z0-9_]*`).FindAllString(quoted.ReplaceAllString(query, "''"), -1) {
		if tok[0] >= 'A' && tok[0] <= 'Z' && tok != strings.ToUpper(tok) {
			out = append(out, tok)
		}
	}
	return out
}

// pollLineKeys are the top-level keys of the poll lines internal/metrics
// writes (a failed poll that also stopped early carries them all).
func pollLineKeys(t *testing.T) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	for _, r := range []connector.Result{
		{Mailbox: "sales"},
		{Mailbox: "sales", Stopped: "deadline", Err: errors.New("boom")},
	} {
		var b bytes.Buffer
		if err := metrics.PollEMF(&b, "PopConnector", r, time.Now(), metrics.PollOptions{}); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			keys[k] = true
		}
	}
	return keys
}

// TestDashboardLogQueries: each Logs Insights widget reads the poll lines
// of both functions (in fanout mode) and only fields those lines have.
func TestDashboardLogQueries(t *testing.T) {
	keys := pollLineKeys(t)
	for _, mode := range dashboardModes {
		t.Run(mode, func(t *testing.T) {
			d, _, r := loadDashboard(t, mode)
			wantSource := "SOURCE '" + refPlaceholder("PollerLogGroup") + "'"
			if r.conds["FanOut"] {
				wantSource += " | SOURCE '" + refPlaceholder("WorkerLogGroup") + "'"
			}
			n := 0
			for _, w := range d.Widgets {
				if w.Type != "log" {
					continue
				}
				n++
				q, _ := w.Properties["query"].(string)
				if !strings.HasPrefix(q, wantSource+" | ") {
					t.Errorf("widget %s: query %q does not start with %q", w.title(), q, wantSource)
				}
				for _, f := range logFields(strings.TrimPrefix(q, wantSource)) {
					if !keys[f] {
						t.Errorf("widget %s: field %s is not in the poll lines metrics.PollEMF writes", w.title(), f)
					}
				}
				if !strings.Contains(q, "by "+metrics.DimensionMailbox) {
					t.Errorf("widget %s: not grouped by %s", w.title(), metrics.DimensionMailbox)
				}
			}
			if n < 2 {
				t.Errorf("%d log widgets, want the per-mailbox failure and backlog tables", n)
			}
		})
	}
}

// TestDashboardShowsWhatOperatorsNeed: the views the deployment promises,
// and every alarm on the alarm widget or, for a fanout-only alarm, its
// metric on a widget.
func TestDashboardShowsWhatOperatorsNeed(t *testing.T) {
	for _, mode := range dashboardModes {
		t.Run(mode, func(t *testing.T) {
			d, tp, r := loadDashboard(t, mode)
			ns := scalarString(r.vals["MetricsNamespace"])
			ms := dashboardMetrics(t, d)
			has := func(namespace, name string, dim, value string) bool {
				for _, m := range ms {
					if m.namespace == namespace && m.name == name && (dim == "" || m.values[dim] == value) {
						return true
					}
				}
				return false
			}
			worker := "none-in-single-mode"
			if r.conds["FanOut"] {
				worker = refPlaceholder("WorkerFunction")
			}
			for _, want := range []struct {
				what, namespace, name, dim, value string
			}{
				{"throughput", ns, "MessagesDelivered", "", ""},
				{"failed polls", ns, "MailboxErrors", "", ""},
				{"busy mailboxes", ns, "LeaseContention", "", ""},
				{"oldest undelivered age", ns, "OldestUndeliveredAge", "", ""},
				{"rejections", ns, "MessagesRejected", "", ""},
				{"busy per invocation", ns, "MailboxesBusy", "", ""},
				{"poller duration vs timeout", "AWS/Lambda", "Duration", "FunctionName", refPlaceholder("PollerFunction")},
				{"worker duration vs timeout", "AWS/Lambda", "Duration", "FunctionName", worker},
				{"poller errors", "AWS/Lambda", "Errors", "FunctionName", refPlaceholder("PollerFunction")},
				{"worker errors", "AWS/Lambda", "Errors", "FunctionName", worker},
				{"poller throttles", "AWS/Lambda", "Throttles", "FunctionName", refPlaceholder("PollerFunction")},
			} {
				if !has(want.namespace, want.name, want.dim, want.value) {
					t.Errorf("no widget shows %s (%s %s %s=%s)", want.what, want.namespace, want.name, want.dim, want.value)
				}
			}
			insight := map[string]bool{}
			for _, m := range ms {
				insight[m.insightRule] = true
			}
			for _, rule := range []string{"PolledMailboxesRule", "HealthyMailboxesRule"} {
				if !insight[getAttPlaceholder(rule, "RuleName")] {
					t.Errorf("no widget counts the failing mailboxes with %s", rule)
				}
			}
			if !strings.Contains(dashboardSource(t), "${FunctionTimeout}") {
				t.Error("the duration widget does not relate the duration to the FunctionTimeout parameter")
			}
			// The alarm widget lists every alarm that exists in both modes,
			// and only alarms; a fanout-only alarm's metric is on a widget.
			shown := map[string]bool{}
			for _, w := range d.Widgets {
				if w.Type != "alarm" {
					continue
				}
				for _, a := range asList(w.Properties["alarms"]) {
					s := scalarString(a)
					id, ok := strings.CutSuffix(strings.TrimPrefix(s, "getatt("), ".Arn)")
					if !ok || tp.resourceType(id) != "AWS::CloudWatch::Alarm" {
						t.Errorf("alarm widget lists %q, which is not an alarm of the template", s)
						continue
					}
					if tp.resourceCondition(id) != "" {
						t.Errorf("alarm widget lists %s, which exists only under %s", id, tp.resourceCondition(id))
					}
					shown[id] = true
				}
			}
			for _, id := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
				if tp.resourceCondition(id) == "" {
					if !shown[id] {
						t.Errorf("alarm %s is not on the dashboard's alarm widget", id)
					}
					continue
				}
				if !r.conds[tp.resourceCondition(id)] {
					continue
				}
				a, err := r.cf.GetCloudWatchAlarmWithName(id)
				if err != nil {
					t.Fatal(err)
				}
				var dim, value string
				for _, dm := range a.Dimensions {
					dim, value = dm.Name, dm.Value
				}
				if !has(deref(a.Namespace), deref(a.MetricName), dim, value) {
					t.Errorf("fanout alarm %s: its metric %s %s %s=%s is on no widget", id, deref(a.Namespace), deref(a.MetricName), dim, value)
				}
			}
		})
	}
}
