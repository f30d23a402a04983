package templatetest

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// alarmMetric is one metric an alarm watches, as written in the template:
// a metric, or a Contributor Insights rule's (INSIGHT_RULE_METRIC).
type alarmMetric struct {
	namespace any // a string or {"Ref": "MetricsNamespace"}
	name      string
	dims      map[string]any // name -> value as written
	stat      string
	period    any
	// insightRule is the logical ID of the rule an INSIGHT_RULE_METRIC
	// expression names (as ${Rule.RuleName}); name is then its metric.
	insightRule string
}

// insightExpr is INSIGHT_RULE_METRIC('${Rule.RuleName}', 'Metric') as
// written in the template, or with the rule name resolved.
var insightExpr = regexp.MustCompile(`INSIGHT_RULE_METRIC\('([^']*)',\s*'([A-Za-z]+)'\)`)

// insightMetrics are the metrics INSIGHT_RULE_METRIC returns.
var insightMetrics = []string{"UniqueContributors", "MaxContributorValue", "SampleCount", "Sum", "Minimum", "Maximum", "Average"}

// quoted matches string literals in a metric math expression, which hold
// names, not query ids.
var quoted = regexp.MustCompile(`'[^']*'|"[^"]*"`)

// exprIdentifiers lists the query ids an expression uses: its words
// outside string literals and ${...}, less the functions (upper case).
func exprIdentifiers(e string) []string {
	var out []string
	for _, tok := range regexp.MustCompile(`\$\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*`).FindAllString(quoted.ReplaceAllString(e, "''"), -1) {
		if !strings.HasPrefix(tok, "${") && tok != strings.ToUpper(tok) {
			out = append(out, tok)
		}
	}
	return out
}

func (m alarmMetric) dimNames() []string {
	var n []string
	for k := range m.dims {
		n = append(n, k)
	}
	return n
}

func alarmMetrics(t *testing.T, p map[string]any) (ms []alarmMetric, exprs []string) {
	t.Helper()
	dims := func(v any) map[string]any {
		out := map[string]any{}
		for _, d := range asList(v) {
			dm, _ := d.(map[string]any)
			out[scalarString(dm["Name"])] = dm["Value"]
		}
		return out
	}
	if name, ok := p["MetricName"].(string); ok {
		ms = append(ms, alarmMetric{namespace: p["Namespace"], name: name, dims: dims(p["Dimensions"]),
			stat: scalarString(p["Statistic"]), period: p["Period"]})
	}
	ids := map[string]bool{}
	for _, q := range asList(p["Metrics"]) {
		qm, _ := q.(map[string]any)
		ids[scalarString(qm["Id"])] = true
		if ms1, ok := qm["MetricStat"].(map[string]any); ok {
			m, _ := ms1["Metric"].(map[string]any)
			ms = append(ms, alarmMetric{namespace: m["Namespace"], name: scalarString(m["MetricName"]),
				dims: dims(m["Dimensions"]), stat: scalarString(ms1["Stat"]), period: ms1["Period"]})
		}
		if e, ok := qm["Expression"]; ok {
			var src string
			switch x := e.(type) {
			case string:
				src = x
			case map[string]any:
				src = scalarString(x["Fn::Sub"])
			}
			exprs = append(exprs, src)
			for _, m := range insightExpr.FindAllStringSubmatch(src, -1) {
				rule, ok := strings.CutSuffix(strings.TrimPrefix(m[1], "${"), ".RuleName}")
				if !ok || !strings.HasPrefix(m[1], "${") {
					t.Errorf("INSIGHT_RULE_METRIC names %q; name a rule of the template as ${Rule.RuleName}", m[1])
				}
				ms = append(ms, alarmMetric{name: m[2], insightRule: rule, stat: m[2], period: qm["Period"]})
			}
		}
	}
	for _, e := range exprs {
		for _, tok := range exprIdentifiers(e) {
			if !ids[tok] {
				t.Errorf("expression %q uses %q, which is no query id of the alarm", e, tok)
			}
		}
	}
	return ms, exprs
}

var (
	refNamespace = map[string]any{"Ref": "MetricsNamespace"}
	refFunction  = map[string]any{"Ref": "PollerFunction"}
	refWorker    = map[string]any{"Ref": "WorkerFunction"}
	// The function that polls mailboxes: the poller, in fanout mode the worker.
	refPolling = map[string]any{"Fn::If": []any{"FanOut", refWorker, refFunction}}
	refTopic   = map[string]any{"Ref": "AlarmTopic"}
)

// TestAlarmsWatchRealMetrics: each alarm watches a metric that exists,
// with the dimensions it is published with, and notifies the SNS topic.
func TestAlarmsWatchRealMetrics(t *testing.T) {
	tp := load(t)
	ids := tp.resourceIDs("AWS::CloudWatch::Alarm")
	if len(ids) == 0 {
		t.Fatal("no alarms")
	}
	for _, id := range ids {
		t.Run(id, func(t *testing.T) {
			p := tp.props(id)
			ms, _ := alarmMetrics(t, p)
			if len(ms) == 0 {
				t.Fatal("watches no metric")
			}
			cond := tp.resourceCondition(id)
			for _, m := range ms {
				switch {
				case m.insightRule != "":
					if tp.resourceType(m.insightRule) != "AWS::CloudWatch::InsightRule" {
						t.Errorf("INSIGHT_RULE_METRIC of %s, which is no Contributor Insights rule of the template", m.insightRule)
					}
					if !contains(insightMetrics, m.name) {
						t.Errorf("INSIGHT_RULE_METRIC metric %q is none of %v", m.name, insightMetrics)
					}
					if m.period == nil {
						t.Errorf("INSIGHT_RULE_METRIC of %s has no Period; an alarm on a rule needs one", m.insightRule)
					}
				case reflect.DeepEqual(m.namespace, refNamespace):
					if err := emittedWith(m.name, m.dimNames()); err != nil {
						t.Error(err)
					}
				case m.namespace == "AWS/Lambda":
					fn := m.dims["FunctionName"]
					switch {
					case len(m.dims) != 1:
						t.Errorf("AWS/Lambda %s: dimensions %v, want FunctionName only", m.name, m.dims)
					case reflect.DeepEqual(fn, refFunction), reflect.DeepEqual(fn, refPolling):
					case reflect.DeepEqual(fn, refWorker):
						if cond != "FanOut" {
							t.Errorf("AWS/Lambda %s of the WorkerFunction in an alarm without Condition FanOut", m.name)
						}
					default:
						t.Errorf("AWS/Lambda %s: FunctionName %v, want the PollerFunction, the WorkerFunction or the one that polls", m.name, fn)
					}
				case m.namespace == "AWS/SQS":
					q := m.dims["QueueName"]
					ok := len(m.dims) == 1 && cond == "FanOut" && (isGetAtt(q, "JobDeadLetterQueue", "QueueName") || isGetAtt(q, "JobQueue", "QueueName"))
					if !ok {
						t.Errorf("AWS/SQS %s: dimensions %v (alarm condition %q), want QueueName of a fan-out queue under FanOut", m.name, m.dims, cond)
					}
				default:
					t.Errorf("metric %s in namespace %v, neither the MetricsNamespace parameter nor AWS/Lambda or AWS/SQS", m.name, m.namespace)
				}
				if m.stat == "" {
					t.Errorf("%s: no statistic", m.name)
				}
			}
			for _, key := range []string{"AlarmActions", "OKActions"} {
				found := false
				for _, a := range asList(p[key]) {
					found = found || reflect.DeepEqual(a, refTopic)
				}
				if !found {
					t.Errorf("%s does not notify the AlarmTopic", key)
				}
			}
			if p["AlarmDescription"] == nil {
				t.Error("no AlarmDescription: the notification should say what is wrong")
			}
			switch tm := scalarString(p["TreatMissingData"]); tm {
			case "breaching", "notBreaching", "ignore", "missing":
			default:
				t.Errorf("TreatMissingData %q", tm)
			}
		})
	}
}

// TestAlarmAWSMetricsExist checks the AWS metrics alarms watch against the
// specification.
func TestAlarmAWSMetricsExist(t *testing.T) {
	sp := loadSpec(t)
	tp := load(t)
	n := 0
	for _, id := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
		ms, _ := alarmMetrics(t, tp.props(id))
		for _, m := range ms {
			ns, ok := m.namespace.(string)
			if !ok || !strings.HasPrefix(ns, "AWS/") {
				continue
			}
			n++
			if err := sp.awsMetricExists(ns, m.name, m.dimNames()); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}
	}
	if n == 0 {
		t.Error("no alarm on an AWS metric")
	}
}

// TestRequiredAlarms: the alarms the deployment promises, each found by
// the metric it watches and checked for the settings that make it mean
// what its comment says.
func TestRequiredAlarms(t *testing.T) {
	tp := load(t)
	find := func(namespace any, name string) (string, map[string]any, []string) {
		for _, id := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
			p := tp.props(id)
			ms, exprs := alarmMetrics(t, p)
			for _, m := range ms {
				if reflect.DeepEqual(m.namespace, namespace) && m.name == name {
					return id, p, exprs
				}
			}
		}
		t.Errorf("no alarm on %v %s", namespace, name)
		return "", nil, nil
	}
	ref := func(name string) map[string]any { return map[string]any{"Ref": name} }
	expect := func(id string, p map[string]any, key string, want any) {
		t.Helper()
		if p == nil {
			return
		}
		if !reflect.DeepEqual(p[key], want) {
			t.Errorf("%s: %s = %v, want %v", id, key, p[key], want)
		}
	}

	for _, name := range []string{"Errors", "Throttles"} {
		id, p, _ := find("AWS/Lambda", name)
		expect(id, p, "Statistic", "Sum")
		expect(id, p, "ComparisonOperator", "GreaterThanOrEqualToThreshold")
		expect(id, p, "Threshold", 1.0)
	}
	// The worker's errors, in fanout mode.
	workerErrors := false
	for _, id := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
		p := tp.props(id)
		if p["MetricName"] == "Errors" && reflect.DeepEqual(asList(p["Dimensions"]), []any{map[string]any{"Name": "FunctionName", "Value": refWorker}}) {
			workerErrors = true
			expect(id, p, "Threshold", 1.0)
		}
	}
	if !workerErrors {
		t.Error("no alarm on the WorkerFunction's errors")
	}

	// fanout: a job in the dead-letter queue.
	id, p, _ := find("AWS/SQS", "ApproximateNumberOfMessagesVisible")
	if p != nil {
		expect(id, p, "Threshold", 0.0)
		expect(id, p, "ComparisonOperator", "GreaterThanThreshold")
		expect(id, p, "Statistic", "Maximum")
		if !isGetAtt(asList(p["Dimensions"])[0].(map[string]any)["Value"], "JobDeadLetterQueue", "QueueName") {
			t.Errorf("%s watches %v, want the JobDeadLetterQueue", id, p["Dimensions"])
		}
	}

	// More mailboxes failing than in the window before: polled minus
	// healthy mailboxes per FailingMailboxWindowSeconds, differenced.
	id = ""
	for _, a := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
		ms, exprs := alarmMetrics(t, tp.props(a))
		rules := map[string]bool{}
		for _, m := range ms {
			if m.insightRule != "" {
				rules[m.insightRule] = true
				if !reflect.DeepEqual(m.period, ref("FailingMailboxWindowSeconds")) || m.name != "UniqueContributors" {
					t.Errorf("%s: %s %s over %v, want UniqueContributors over FailingMailboxWindowSeconds", a, m.insightRule, m.name, m.period)
				}
			}
		}
		if rules["PolledMailboxesRule"] && rules["HealthyMailboxesRule"] {
			id = a
			if !slices.Contains(exprs, "FILL(polled, 0) - FILL(healthy, 0)") || !slices.Contains(exprs, "DIFF(failing)") {
				t.Errorf("%s: expressions %v, want the failing count polled - healthy and its DIFF", a, exprs)
			}
			p := tp.props(a)
			expect(a, p, "Threshold", 1.0)
			expect(a, p, "ComparisonOperator", "GreaterThanOrEqualToThreshold")
			expect(a, p, "TreatMissingData", "notBreaching")
			// DIFF needs the window before in the evaluation range.
			expect(a, p, "EvaluationPeriods", 2.0)
			expect(a, p, "DatapointsToAlarm", 1.0)
		}
	}
	if id == "" {
		t.Error("no alarm on the number of failing mailboxes (PolledMailboxesRule - HealthyMailboxesRule)")
	}

	id, p, exprs := find("AWS/Lambda", "Duration")
	if p != nil {
		ms, _ := alarmMetrics(t, p)
		if len(ms) != 1 || !reflect.DeepEqual(ms[0].dims["FunctionName"], refPolling) {
			t.Errorf("%s: watches %v, want the function that polls (the worker in fanout mode)", id, ms)
		}
	}
	if p != nil {
		if len(exprs) != 1 || !strings.Contains(exprs[0], "${FunctionTimeout}") {
			t.Errorf("%s: expressions %v, want one dividing by the FunctionTimeout parameter", id, exprs)
		}
		th, _ := p["Threshold"].(float64)
		if th <= 0.5 || th >= 1 {
			t.Errorf("%s: threshold %v, want a fraction of the timeout such as 0.8", id, th)
		}
		expect(id, p, "ComparisonOperator", "GreaterThanThreshold")
		ms, _ := alarmMetrics(t, p)
		if len(ms) != 1 || ms[0].stat != "Maximum" {
			t.Errorf("%s: want the Maximum duration", id)
		}
	}

	id, p, _ = find(refNamespace, "MailboxErrors")
	_ = exprs
	expect(id, p, "EvaluationPeriods", ref("FailedPollsAlarmCount"))
	expect(id, p, "DatapointsToAlarm", ref("FailedPollsAlarmCount"))
	expect(id, p, "Period", ref("SchedulePeriodSeconds"))
	expect(id, p, "Statistic", "Maximum")

	id, p, _ = find(refNamespace, "OldestUndeliveredAge")
	expect(id, p, "Threshold", ref("OldestUndeliveredAlarmSeconds"))
	expect(id, p, "ComparisonOperator", "GreaterThanThreshold")
	expect(id, p, "Statistic", "Maximum")

	id, p, _ = find(refNamespace, "MessagesRejected")
	expect(id, p, "Threshold", 0.0)
	expect(id, p, "ComparisonOperator", "GreaterThanThreshold")

	id, p, _ = find("AWS/Lambda", "Invocations")
	expect(id, p, "ComparisonOperator", "LessThanThreshold")
	expect(id, p, "Threshold", 1.0)
	expect(id, p, "TreatMissingData", "breaching")
	expect(id, p, "Period", ref("SchedulePeriodSeconds"))
}

// isGetAtt reports whether v is Fn::GetAtt of id's attr (either form).
func isGetAtt(v any, id, attr string) bool {
	m, _ := v.(map[string]any)
	if len(m) != 1 || m["Fn::GetAtt"] == nil {
		return false
	}
	i, a := splitGetAtt(m["Fn::GetAtt"])
	return i == id && a == attr
}

var rateExpr = regexp.MustCompile(`^rate\((\d+) (minutes?|hours?|days?)\)$`)

// TestAlarmPeriods: under every parameter set and every allowed schedule
// period, the periods are ones CloudWatch accepts (10, 30 or a multiple of
// 60 s) and the evaluation range stays within CloudWatch's limit (one day
// for periods under an hour, seven days otherwise). The default schedule
// period covers the default schedule.
func TestAlarmPeriods(t *testing.T) {
	tp := load(t)
	pm := tp.section("Parameters")
	periods := asList(pm["SchedulePeriodSeconds"].(map[string]any)["AllowedValues"])
	maxCount := pm["FailedPollsAlarmCount"].(map[string]any)["MaxValue"]
	if maxCount == nil {
		t.Fatal("FailedPollsAlarmCount has no MaxValue")
	}
	for _, per := range periods {
		sets := map[string]map[string]string{
			"min count": {"SchedulePeriodSeconds": scalarString(per), "FailedPollsAlarmCount": "1"},
			"max count": {"SchedulePeriodSeconds": scalarString(per), "FailedPollsAlarmCount": scalarString(maxCount)},
		}
		for _, w := range asList(pm["FailingMailboxWindowSeconds"].(map[string]any)["AllowedValues"]) {
			sets["window "+scalarString(w)] = map[string]string{"SchedulePeriodSeconds": scalarString(per), "FailingMailboxWindowSeconds": scalarString(w)}
		}
		for name, values := range sets {
			r := tp.resolve(t, values)
			for _, id := range tp.resourceIDs("AWS::CloudWatch::Alarm") {
				a, err := r.cf.GetCloudWatchAlarmWithName(id)
				if err != nil {
					t.Fatal(err)
				}
				period := derefInt(a.Period)
				for _, q := range a.Metrics {
					if q.MetricStat != nil {
						period = q.MetricStat.Period
					}
					if q.Period != nil {
						period = *q.Period
					}
				}
				where := fmt.Sprintf("%s with period %v, %s", id, per, name)
				if period != 10 && period != 30 && (period < 60 || period%60 != 0) {
					t.Errorf("%s: period %d", where, period)
				}
				limit := 86400
				if period >= 3600 {
					limit = 7 * 86400
				}
				if period*a.EvaluationPeriods > limit {
					t.Errorf("%s: %d periods of %d s exceed the evaluation range of %d s", where, a.EvaluationPeriods, period, limit)
				}
				if d := derefInt(a.DatapointsToAlarm); d > a.EvaluationPeriods {
					t.Errorf("%s: DatapointsToAlarm %d > EvaluationPeriods %d", where, d, a.EvaluationPeriods)
				}
			}
		}
	}
	vals := tp.paramValues(t, defaults)
	m := rateExpr.FindStringSubmatch(scalarString(vals["ScheduleExpression"]))
	if m == nil {
		t.Fatalf("default ScheduleExpression %v is not a rate() this test understands", vals["ScheduleExpression"])
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[byte]int{'m': 60, 'h': 3600, 'd': 86400}[m[2][0]]
	if got := vals["SchedulePeriodSeconds"].(float64); int(got) < n*unit {
		t.Errorf("SchedulePeriodSeconds %v is shorter than the default schedule's %d s", got, n*unit)
	}
}
