package templatetest

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/popconnector/popconnector/internal/metrics"
)

// insightRuleBody is the part of a Contributor Insights rule body
// (CloudWatchLogRule schema, version 1) the tests read.
type insightRuleBody struct {
	Schema struct {
		Name    string `json:"Name"`
		Version int    `json:"Version"`
	} `json:"Schema"`
	LogGroupNames []string `json:"LogGroupNames"`
	LogFormat     string   `json:"LogFormat"`
	Contribution  struct {
		Keys    []string `json:"Keys"`
		Filters []struct {
			Match string   `json:"Match"`
			In    []string `json:"In"`
		} `json:"Filters"`
	} `json:"Contribution"`
	AggregateOn string `json:"AggregateOn"`
}

// The keys of the handler's poll log line (internal/lambdafn) the rules
// read: the mailbox id, and how the poll ended (metrics.Outcome's values).
const (
	logKeyMailbox = "$.mailbox"
	logKeyOutcome = "$.outcome"
)

// TestContributorInsightsRules: each rule is valid JSON after resolution,
// reads the poll lines of every function that polls in the mode (the
// worker's log group only in fanout mode), counts per mailbox, and filters
// on outcomes internal/metrics defines. PolledMailboxesRule minus
// HealthyMailboxesRule must be exactly the failed polls, with busy
// mailboxes in neither.
func TestContributorInsightsRules(t *testing.T) {
	tp := load(t)
	want := map[string][]string{
		"PolledMailboxesRule":  {metrics.OutcomeOK, metrics.OutcomeStopped, metrics.OutcomeFailed},
		"HealthyMailboxesRule": {metrics.OutcomeOK, metrics.OutcomeStopped},
	}
	if ids := tp.resourceIDs("AWS::CloudWatch::InsightRule"); !reflect.DeepEqual(ids, []string{"HealthyMailboxesRule", "PolledMailboxesRule"}) {
		t.Errorf("Contributor Insights rules %v, want HealthyMailboxesRule and PolledMailboxesRule", ids)
	}
	for _, ps := range paramSets {
		t.Run(ps.name, func(t *testing.T) {
			r := tp.resolve(t, ps.values)
			groups := []string{refPlaceholder("PollerLogGroup")}
			if r.conds["FanOut"] {
				groups = append(groups, refPlaceholder("WorkerLogGroup"))
			}
			for id, outcomes := range want {
				p := r.props(id)
				if p["RuleState"] != "ENABLED" {
					t.Errorf("%s: RuleState %v", id, p["RuleState"])
				}
				src, _ := p["RuleBody"].(string)
				var b insightRuleBody
				if err := json.Unmarshal([]byte(src), &b); err != nil {
					t.Fatalf("%s: RuleBody is not JSON: %v\n%s", id, err, src)
				}
				if b.Schema.Name != "CloudWatchLogRule" || b.Schema.Version != 1 || b.LogFormat != "JSON" || b.AggregateOn != "Count" {
					t.Errorf("%s: schema %+v, format %q, aggregate %q", id, b.Schema, b.LogFormat, b.AggregateOn)
				}
				if !slices.Equal(b.LogGroupNames, groups) {
					t.Errorf("%s: log groups %v, want %v", id, b.LogGroupNames, groups)
				}
				if !slices.Equal(b.Contribution.Keys, []string{logKeyMailbox}) {
					t.Errorf("%s: keys %v, want [%s] (UniqueContributors then counts mailboxes)", id, b.Contribution.Keys, logKeyMailbox)
				}
				if len(b.Contribution.Filters) != 1 || b.Contribution.Filters[0].Match != logKeyOutcome {
					t.Fatalf("%s: filters %+v, want one on %s", id, b.Contribution.Filters, logKeyOutcome)
				}
				got := slices.Sorted(slices.Values(b.Contribution.Filters[0].In))
				if !slices.Equal(got, slices.Sorted(slices.Values(outcomes))) {
					t.Errorf("%s: outcomes %v, want %v", id, got, outcomes)
				}
				if slices.Contains(got, metrics.OutcomeBusy) {
					t.Errorf("%s counts busy mailboxes: a skipped poll is neither a poll nor a failure", id)
				}
			}
		})
	}
}
